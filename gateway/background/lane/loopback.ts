/**
 * Sends a batch line as an ordinary HTTP request to this instance's own listener, so it passes
 * exactly the preparation, estimate, admission, failover, accounting and logging interactive traffic
 * does. The lane's mark (http/auth.ts LaneMarker) makes it background work of the batch's client;
 * its x-request-id names the batch, the line and the run (the simulator records it upstream).
 */
import { Agent, request, type IncomingHttpHeaders } from 'node:http';
import type { BatchEndpoint } from '../contract.ts';

/** What the listener answered, read whole; or why there is no answer. */
export type LoopbackAnswer =
  | { kind: 'answer'; status: number; headers: IncomingHttpHeaders; body: Buffer }
  | { kind: 'no-answer'; timedOut: boolean; message: string };

export interface LoopbackCall {
  endpoint: BatchEndpoint;
  body: string;
  requestId: string;
  /** The lane's mark and the batch's client (LaneMarker.headers). */
  headers: Record<string, string>;
  /** The whole exchange, headers to the end of the body. */
  timeoutMs: number;
  /** Aborted when the lane stops (the shutdown grace is over). */
  signal: AbortSignal;
}

/** A line's answer larger than this is not kept (an embeddings answer of 2 048 inputs is a few MB). */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

/** The OpenAI-style route of each endpoint: `model` in the body names the pool. */
const PATHS: Record<BatchEndpoint, string> = {
  '/v1/chat/completions': '/openai/v1/chat/completions',
  '/v1/embeddings': '/openai/v1/embeddings',
  '/v1/responses': '/openai/v1/responses',
};

export class Loopback {
  private readonly origin: URL;
  private readonly agent: Agent;

  /** `url`: the address the listener bound (app.ts `listen`), on this host. */
  constructor(url: string, maxSockets: number) {
    this.origin = new URL(url);
    this.agent = new Agent({ keepAlive: true, maxSockets });
  }

  send(call: LoopbackCall): Promise<LoopbackAnswer> {
    const body = Buffer.from(call.body);
    return new Promise((resolve) => {
      let settled = false;
      const settle = (answer: LoopbackAnswer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(answer);
      };
      const req = request(
        {
          host: this.origin.hostname,
          port: this.origin.port,
          method: 'POST',
          path: PATHS[call.endpoint],
          agent: this.agent,
          signal: call.signal,
          headers: {
            ...call.headers,
            'content-type': 'application/json',
            'content-length': String(body.length),
            'x-request-id': call.requestId,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_ANSWER_BYTES) return void req.destroy(new Error(`answer larger than ${MAX_ANSWER_BYTES} bytes`));
            chunks.push(chunk);
          });
          res.on('end', () => settle({ kind: 'answer', status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) }));
          res.on('error', (error) => settle({ kind: 'no-answer', timedOut: false, message: error.message }));
          // Closed before its end (after 'end' this is a no-op): the answer broke off.
          res.on('close', () => settle({ kind: 'no-answer', timedOut: false, message: 'the answer broke off' }));
        },
      );
      const timer = setTimeout(() => {
        settle({ kind: 'no-answer', timedOut: true, message: `no answer within ${call.timeoutMs} ms` });
        req.destroy();
      }, call.timeoutMs);
      req.on('error', (error) => settle({ kind: 'no-answer', timedOut: false, message: error.message }));
      req.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
