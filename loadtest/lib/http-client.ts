/**
 * The client side the load generator and the admission benchmark share: loopback targets only, and
 * one request sent once (no retry) that ends exactly once, so that both count requests the same way.
 */
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type RequestOptions } from 'node:http';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** The URL, parsed; throws unless it points at this machine (the tools must never load a remote host). */
export function loopbackUrl(url: string): URL {
  const parsed = new URL(url);
  if (!LOOPBACK.has(parsed.hostname)) throw new Error(`refusing a non-loopback target: ${url}`);
  return parsed;
}

/** How one request ended. */
export interface Ending {
  /** The response's status; 0 when it failed (`error` says how). */
  status: number;
  /** The response head: when it ended complete, and when its body was cut short ('reset-mid-response'). */
  headers?: IncomingHttpHeaders;
  /** Why it failed: a socket error code, 'timeout', 'reset-mid-response' or 'unfinished' (cut). */
  error?: string;
}

/**
 * Sends one request and calls `onEnd` once: when the response has ended, when it failed (no socket
 * activity for `timeoutMs` counts as 'timeout'), or when it was cut. `onResponse` gets the response
 * head and must read or resume the body. Returns `cut`, which ends the request at once as 'unfinished'.
 */
export function sendOnce(
  options: RequestOptions,
  body: Buffer,
  timeoutMs: number,
  onResponse: (response: IncomingMessage) => void,
  onEnd: (ending: Ending) => void,
): () => void {
  let ended = false;
  let response: IncomingMessage | undefined;
  const end = (ending: Ending) => {
    if (ended) return;
    ended = true;
    onEnd(ending);
  };
  const req = httpRequest(options, (res) => {
    response = res;
    onResponse(res);
    res.on('end', () => end({ status: res.statusCode ?? 0, headers: res.headers }));
    res.on('close', () => {
      // A body cut short keeps its head: it still tells what the server decided.
      if (!res.complete) end({ status: 0, headers: res.headers, error: 'reset-mid-response' });
    });
  });
  req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })));
  req.on('error', (error: NodeJS.ErrnoException) => {
    response?.destroy();
    end({ status: 0, error: error.code ?? 'error' });
  });
  req.end(body);
  return () => {
    req.destroy();
    response?.destroy();
    end({ status: 0, error: 'unfinished' });
  };
}
