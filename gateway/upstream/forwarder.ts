/**
 * One upstream attempt through http-proxy-middleware. The proxy handles the response itself
 * (selfHandleResponse) so the attempt loop sees the status before a byte reaches the client and can
 * still fail over; what it then pipes is the upstream stream, chunk by chunk.
 *
 * HPM keeps one proxy server and calls our hooks with `req`; the current attempt hangs off the
 * client request while HPM sets up, then off the upstream request, so a request can go through the
 * same middleware once per attempt.
 */
import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Readable } from 'node:stream';
import { createProxyMiddleware } from 'http-proxy-middleware';
import type { OriginSockets } from '../metrics.ts';
import { bodyHeaders, strippedRequestHeaders } from './headers.ts';

export interface AttemptSpec {
  /** Origin of the deployment, e.g. https://acct.openai.azure.com */
  target: URL;
  /** Path and query sent upstream. */
  path: string;
  /** Request body, replayed on every attempt. */
  body: Buffer;
  /** Headers replaced or added upstream (the deployment's api-key, x-request-id, ...). */
  headers: Record<string, string>;
  /** Time allowed until the response headers arrive. */
  headersTimeoutMs: number;
}

export type AttemptOutcome =
  | { kind: 'response'; response: IncomingMessage; upstreamRequest: ClientRequest }
  | { kind: 'error'; error: NodeJS.ErrnoException; timedOut: boolean };

interface AttemptState {
  spec: AttemptSpec;
  settle: (outcome: AttemptOutcome) => void;
  done: boolean;
  timedOut: boolean;
  upstreamRequest?: ClientRequest;
  timer?: NodeJS.Timeout;
}

/**
 * Where an attempt hangs: on the per-call proxy options, the client request (until HPM's router takes
 * it) and the upstream request, so late events of an old attempt never touch a newer one.
 *
 * A property, not a WeakMap keyed by the request: V8's young-generation GC keeps a WeakMap value
 * alive while its key is, which promoted every request's objects to the old generation (6 MB per
 * scavenge, 8–26 ms pauses and a 14 ms p99 at 200 requests/s; with properties, about 1 ms pauses).
 */
const ATTEMPT = Symbol('spillway.attempt');
const NO_BODY = Buffer.alloc(0);
type WithAttempt = { [ATTEMPT]?: AttemptState };

/**
 * The body as httpxy's `buffer` option: all httpxy does with it is `buffer.pipe(upstreamRequest)`. A
 * real stream per attempt (Readable.from) costs a stream's machinery and a tick for bytes already in
 * hand; ending the upstream request with them sends head and body in one write. httpxy keeps the
 * source for as long as the answer flows: the body is let go of once handed over (piped once per attempt).
 */
export function bodySource(body: Buffer): Readable {
  let unsent = body;
  const source = {
    pipe<T extends NodeJS.WritableStream>(destination: T): T {
      destination.end(unsent);
      unsent = NO_BODY;
      return destination;
    },
  };
  return source as unknown as Readable;
}

export class Forwarder {
  private readonly httpAgent: HttpAgent;
  private readonly httpsAgent: HttpsAgent;

  /** `maxSockets`: per origin (gateway.upstreamMaxSockets). */
  constructor(maxSockets = 10_000) {
    this.httpAgent = new HttpAgent({ keepAlive: true, maxSockets, scheduling: 'lifo' });
    this.httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets, scheduling: 'lifo' });
  }

  /** Each origin's sockets now, from the agents' own tables (read at scrape). */
  sockets(): OriginSockets[] {
    const byOrigin = new Map<string, OriginSockets>();
    const count = (table: NodeJS.ReadOnlyDict<unknown[]>, field: 'active' | 'idle' | 'queued') => {
      for (const [name, list] of Object.entries(table)) {
        // The agent's name is host:port:localAddress[:tls options]; the origin is its first two parts.
        const origin = name.split(':').slice(0, 2).join(':');
        const entry = byOrigin.get(origin) ?? { origin, active: 0, idle: 0, queued: 0 };
        entry[field] += list?.length ?? 0;
        byOrigin.set(origin, entry);
      }
    };
    for (const agent of [this.httpAgent, this.httpsAgent]) {
      count(agent.sockets, 'active');
      count(agent.freeSockets, 'idle');
      count(agent.requests, 'queued');
    }
    return [...byOrigin.values()];
  }

  private readonly proxy = createProxyMiddleware<IncomingMessage, ServerResponse>({
    changeOrigin: true,
    selfHandleResponse: true,
    // The default plugins answer errors themselves (502 pages, logs with URLs); the dispatcher decides instead.
    ejectPlugins: true,
    router: (req, _res, options) => {
      // Bound by attempt(), which HPM calls this router from synchronously.
      const attempt = (req as WithAttempt)[ATTEMPT];
      if (!attempt) throw new Error('no attempt bound to request');
      (req as WithAttempt)[ATTEMPT] = undefined;
      (options as WithAttempt)[ATTEMPT] = attempt;
      options.buffer = bodySource(attempt.spec.body);
      options.headers = bodyHeaders(attempt.spec.headers, attempt.spec.body);
      options.agent = attempt.spec.target.protocol === 'https:' ? this.httpsAgent : this.httpAgent;
      return attempt.spec.target;
    },
    pathRewrite: (_path, _req, _res, options) => (options as WithAttempt | undefined)?.[ATTEMPT]?.spec.path,
    // Our own plugin instead of `on`: `on` handlers are wired by a default plugin that ejectPlugins removes.
    plugins: [
      (proxyServer) => {
        proxyServer.on('proxyReq', (proxyReq, req, _res, options) => this.onUpstreamRequest(proxyReq, req, options));
        proxyServer.on('proxyRes', (proxyRes) => this.onUpstreamResponse(proxyRes));
        // Errors reach each attempt through its own request's listener and `next`; a listener must exist
        // all the same, or an 'error' emitted with none would throw.
        proxyServer.on('error', () => undefined);
      },
    ],
  });

  private onUpstreamRequest(proxyReq: ClientRequest, req: IncomingMessage, options: object): void {
    const attempt = (options as WithAttempt)[ATTEMPT];
    if (!attempt || attempt.done) {
      proxyReq.destroy();
      return;
    }
    attempt.upstreamRequest = proxyReq;
    (proxyReq as WithAttempt)[ATTEMPT] = attempt;
    // httpxy copied the client's headers (and sets `connection: close` for a chunked client body,
    // which goes upstream with a content-length instead): both go, so the pooled connection is reused.
    // Only those the client sent are removed (most of the list never is), and `connection` always.
    const sent = req.headers;
    for (const name of strippedRequestHeaders(sent.connection)) {
      if ((sent[name] !== undefined || name === 'connection') && !(name in attempt.spec.headers)) proxyReq.removeHeader(name);
    }
    proxyReq.on('error', (error: NodeJS.ErrnoException) => this.finish(attempt, { kind: 'error', error, timedOut: attempt.timedOut }));
  }

  private onUpstreamResponse(proxyRes: IncomingMessage): void {
    const upstreamRequest = (proxyRes as IncomingMessage & { req?: ClientRequest }).req;
    const attempt = (upstreamRequest as WithAttempt | undefined)?.[ATTEMPT];
    if (!attempt || attempt.done || !upstreamRequest) {
      proxyRes.destroy();
      return;
    }
    this.finish(attempt, { kind: 'response', response: proxyRes, upstreamRequest });
  }

  /** Sends one attempt; resolves when upstream answered with headers, or failed. Never rejects. */
  attempt(req: IncomingMessage, res: ServerResponse, spec: AttemptSpec): Promise<AttemptOutcome> {
    return new Promise((resolve) => {
      const attempt: AttemptState = { spec, settle: resolve, done: false, timedOut: false };
      attempt.timer = setTimeout(() => {
        attempt.timedOut = true;
        const timeout: NodeJS.ErrnoException = new Error('upstream did not answer in time');
        timeout.code = 'ETIMEDOUT';
        this.finish(attempt, { kind: 'error', error: timeout, timedOut: true });
        attempt.upstreamRequest?.destroy();
      }, spec.headersTimeoutMs);
      (req as WithAttempt)[ATTEMPT] = attempt;
      void this.proxy(req, res, (error?: unknown) => {
        if (error) this.finish(attempt, { kind: 'error', error: error as NodeJS.ErrnoException, timedOut: attempt.timedOut });
      });
    });
  }

  private finish(attempt: AttemptState, outcome: AttemptOutcome): void {
    if (attempt.done) return;
    attempt.done = true;
    clearTimeout(attempt.timer);
    // The attempt stays referenced for as long as its stream flows: its timer need not, nor the body
    // once an answer came (the body was sent whole, and another attempt brings its own).
    attempt.timer = undefined;
    if (outcome.kind === 'response') attempt.spec.body = NO_BODY;
    attempt.settle(outcome);
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}
