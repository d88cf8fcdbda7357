/**
 * The admission benchmark's client: node:http, one keep-alive agent per gateway, every request sent
 * once and its answer's figures read (status, retry time, upstream tries, deployment).
 */
import { Agent, type IncomingHttpHeaders } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { header } from '../../gateway/upstream/headers.ts';
import { loopbackUrl, sendOnce, type Ending } from '../lib/http-client.ts';
import { CLIENT_KEY } from '../lib/stack.ts';
import { MAX_IN_FLIGHT, REQUEST_TIMEOUT_MS } from './settings.ts';

export interface Answer {
  /** ms since the phase (or probe series) start when the request was written. */
  sentAt: number;
  /** HTTP status; 0 for a transport error, a timeout or a cut request (`error` says which). */
  status: number;
  error?: string;
  latencyMs: number;
  /** retry-after-ms, else retry-after × 1000; undefined when the response names no retry time. */
  retryAfterMs?: number;
  /** x-gateway-attempts: upstream tries the gateway made (absent on a 429 without any: 0). */
  gatewayAttempts: number;
  deployment?: string;
  /** x-request-id of the answer (the gateway's id of the request, also sent upstream). */
  requestId?: string;
}

function retryAfterOf(headers: IncomingHttpHeaders): number | undefined {
  const ms = Number(header(headers, 'retry-after-ms'));
  if (Number.isFinite(ms) && ms > 0) return ms;
  const seconds = Number(header(headers, 'retry-after'));
  if (Number.isFinite(seconds) && seconds > 0) return seconds * 1000;
  return undefined;
}

/** The answer a request ended with: the figures of its head when there is one, none for a failure without a head. */
function answerOf(ending: Ending): Omit<Answer, 'sentAt' | 'latencyMs'> {
  const { status, headers, error } = ending;
  const retryAfterMs = headers ? retryAfterOf(headers) : undefined;
  const deployment = headers ? header(headers, 'x-gateway-deployment') : undefined;
  const requestId = headers ? header(headers, 'x-request-id') : undefined;
  return {
    status,
    ...(error !== undefined ? { error } : {}),
    gatewayAttempts: headers ? Number(header(headers, 'x-gateway-attempts') ?? 0) || 0 : 0,
    ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
    ...(deployment !== undefined ? { deployment } : {}),
    ...(requestId !== undefined ? { requestId } : {}),
  };
}

/** node:http with one keep-alive agent per gateway; every live request can be cut at once. */
export class Client {
  private readonly targets: { url: URL; agent: Agent }[];
  private readonly live = new Set<() => void>();

  constructor(urls: string[]) {
    this.targets = urls.map((url) => ({
      url: loopbackUrl(url),
      agent: new Agent({ keepAlive: true, maxSockets: MAX_IN_FLIGHT, scheduling: 'lifo' }),
    }));
  }

  get count(): number {
    return this.targets.length;
  }

  get inFlight(): number {
    return this.live.size;
  }

  /**
   * POSTs `body` to gateway `index`; resolves when the response ended (never rejects). `onHeaders`
   * is called once: with the status when the answer's head arrives, with 0 when the request ends without one.
   */
  post(index: number, path: string, body: Buffer, t0: number, onHeaders?: (status: number) => void): Promise<Answer> {
    const target = this.targets[index % this.targets.length]!;
    if (stopped) return Promise.resolve({ sentAt: performance.now() - t0, status: 0, error: 'aborted', latencyMs: 0, gatewayAttempts: 0 });
    let told = false;
    const tell = (status: number) => {
      if (told) return;
      told = true;
      onHeaders?.(status);
    };
    return new Promise<Answer>((resolvePromise) => {
      const start = performance.now();
      const cut = sendOnce(
        {
          agent: target.agent,
          hostname: target.url.hostname,
          port: target.url.port,
          method: 'POST',
          path,
          headers: { 'content-type': 'application/json', 'content-length': String(body.length), 'api-key': CLIENT_KEY },
        },
        body,
        REQUEST_TIMEOUT_MS,
        (res) => {
          tell(res.statusCode ?? 0);
          res.resume();
        },
        (ending) => {
          this.live.delete(cut);
          tell(0);
          resolvePromise({ ...answerOf(ending), sentAt: start - t0, latencyMs: performance.now() - start });
        },
      );
      this.live.add(cut);
    });
  }

  cutAll(): number {
    const count = this.live.size;
    for (const cut of [...this.live]) cut();
    return count;
  }

  close(): void {
    for (const { agent } of this.targets) agent.destroy();
  }
}

/** Set on SIGINT/SIGTERM: no new request leaves, so that the gateways can stop at once. */
let stopped = false;

export function stopSending(): void {
  stopped = true;
}

export function sendingStopped(): boolean {
  return stopped;
}

/**
 * Waits until performance.now() reaches `target`: timers may fire up to a millisecond early (libuv's
 * cached loop time), and an honoured retry must not leave before the time it was told.
 */
export async function sleepUntil(target: number): Promise<void> {
  for (let step = 0; step < 1000 && performance.now() < target; step++) await sleep(Math.max(1, target - performance.now()));
}

/** `work`'s value, or `fallback` once `ms` have passed (`work` goes on: cut it to stop it). */
export function within<T, F>(work: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<F>((resolvePromise) => {
    timer = setTimeout(resolvePromise, Math.max(0, ms), fallback);
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}
