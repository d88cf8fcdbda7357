/** Messages between the scale bench and its stream workers (loadtest/scale/stream-worker.ts). */

/** One kind of stream: where it goes and what it asks for. */
export interface StreamTarget {
  /** e.g. http://127.0.0.1:8080 (loopback only). */
  baseUrl: string;
  /** Path and query of the chat completion. */
  path: string;
  apiKey: string;
  body: string;
}

export interface OpenSpec extends StreamTarget {
  count: number;
  /** New streams per second, evenly spaced. */
  perSecond: number;
  /** A stream with no data for this long is cut and counted as 'timeout'. */
  idleTimeoutMs: number;
  /** Answer at the latest this long after the last stream was sent, whatever is still waiting for its first token. */
  settleMs: number;
}

/** What went wrong, by cause: an HTTP status ('502'), a socket error code ('ECONNRESET'), 'timeout', 'ended' (finished before it was closed). */
export type ErrorCounts = Record<string, number>;

export interface OpenResult {
  /** Streams that delivered their first token and are still open. */
  open: number;
  /** Streams that failed before their first token, by cause. */
  failed: ErrorCounts;
  /** Streams still waiting for their first token when the answer was sent. */
  pending: number;
}

export interface Counts {
  /** SSE events received so far by every stream of this worker (a chunk of the upstream's stream each). */
  events: number;
  open: number;
  /** Streams that broke after their first token, by cause, since the last open. */
  broken: ErrorCounts;
}

export type ToWorker =
  | { type: 'open'; id: number; spec: OpenSpec }
  | { type: 'probe'; id: number; target: StreamTarget; timeoutMs: number }
  | { type: 'counts'; id: number }
  | { type: 'close'; id: number };

export type FromWorker =
  | { type: 'ready' }
  | { type: 'opened'; id: number; result: OpenResult }
  /** ttftMs: request write to the first content event; null with `error`. */
  | { type: 'probed'; id: number; ttftMs: number | null; error?: string }
  | { type: 'counts'; id: number; counts: Counts }
  | { type: 'closed'; id: number; closed: number };
