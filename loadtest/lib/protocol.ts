/** Messages between the orchestrators (driver.ts, bench.ts) and the load-generator process. */
import type { Summary } from './stats.ts';

export interface PreparedRequest {
  name: string;
  /** Path and query, e.g. /openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21 */
  path: string;
  body: string;
  stream: boolean;
  weight: number;
}

export type LoadMode =
  /** Open model: arrivals follow the stages whatever the responses do (k6 ramping-arrival-rate). */
  | { kind: 'open'; startRate: number; stages: { durationMs: number; target: number }[]; maxInFlight: number }
  /** Closed model: `concurrency` workers, each sending its next request when the previous one ended. */
  | { kind: 'closed'; concurrency: number; durationMs: number };

export interface RunSpec {
  /** e.g. http://127.0.0.1:8080 (loopback only). */
  baseUrl: string;
  apiKey: string;
  requests: PreparedRequest[];
  mode: LoadMode;
  /** Hard bound on requests sent in this run. */
  maxRequests: number;
  /** A request with no socket activity for this long is cut and counted as 'timeout'. */
  requestTimeoutMs: number;
  /** After the last arrival, wait at most this long for requests in flight; then cut them ('unfinished'). */
  drainMs: number;
  /** Statuses that are not errors. */
  okStatuses: number[];
  /** Return the raw latency and TTFT samples (for merging rounds). */
  returnSamples?: boolean;
  /** Return every arrival with its time and outcome (`RunResult.arrivals`; the chaos report attributes them to events). */
  recordArrivals?: boolean;
}

/**
 * How one arrival ended, as the client saw it; every arrival has exactly one:
 *   ok            a 2xx whose body completed (a stream with data: [DONE], a JSON body that parses)
 *   throttled     429
 *   server-error  5xx
 *   client-error  any other status (4xx but 429, 1xx, 3xx)
 *   transport     no response head: connection refused or reset, timeout before the head
 *   broken        a 2xx head whose body or stream did not complete (cut, stalled into the timeout,
 *                 ended without data: [DONE], a body that does not parse)
 *   unfinished    still in flight when the drain ended, cut by the generator
 *   dropped       not sent: maxInFlight requests were in flight (open model)
 */
export type OutcomeClass = 'ok' | 'throttled' | 'server-error' | 'client-error' | 'transport' | 'broken' | 'unfinished' | 'dropped';

export const OUTCOME_CLASSES: readonly OutcomeClass[] = [
  'ok',
  'throttled',
  'server-error',
  'client-error',
  'transport',
  'broken',
  'unfinished',
  'dropped',
];

/** One arrival of an open-model run (RunSpec.recordArrivals). */
export interface ArrivalRecord {
  /** When it was sent (or dropped): epoch ms (performance.timeOrigin + performance.now()), comparable across processes. */
  at: number;
  /** The mix entry's name. */
  request: string;
  outcome: OutcomeClass;
  /** The response head's status; 0 without one. */
  status: number;
  /** Transport error code, 'reset-mid-response', 'timeout', 'unfinished'… */
  error?: string;
  /** Send to end; 0 for a dropped arrival. */
  latencyMs: number;
}

export interface RequestBreakdown {
  count: number;
  errors: number;
  /** Latency of 200 responses. */
  latency: Summary | null;
  ttft: Summary | null;
}

export interface TimelinePoint {
  second: number;
  sent: number;
  completed: number;
  ok200: number;
  throttled: number;
  errors: number;
  p50: number | null;
  p95: number | null;
}

export interface RunResult {
  mode: LoadMode['kind'];
  /** Time the load phase lasted (arrivals or closed loop), without the drain. */
  loadMs: number;
  drainMs: number;
  sent: number;
  completed: number;
  /** Completed within the load phase (closed mode's throughput uses it). */
  completedInLoad: number;
  /** Open model: arrivals skipped because maxInFlight requests were in flight (k6 dropped_iterations). */
  dropped: number;
  /** Requests still in flight when the drain ended, cut. */
  unfinished: number;
  /** True when maxRequests stopped the run early. */
  capped: boolean;
  /** Count per HTTP status, or per transport error code (ECONNRESET, timeout, …). */
  statuses: Record<string, number>;
  errors: number;
  errorRate: number;
  /** Completed per second of the load phase. */
  rps: number;
  /** Latency of every response that has a status. */
  latency: Summary | null;
  latencyByStatus: Record<string, Summary>;
  /** Time to response headers of 200 responses. */
  ttfb: Summary | null;
  /** Time to the first SSE event carrying content, streaming 200 responses only. */
  ttft: Summary | null;
  /** Streaming 200 responses that ended without data: [DONE]. */
  incompleteStreams: number;
  /** 2xx heads whose body or stream did not complete (cut, stalled, unparsable): streams and plain bodies. */
  broken: number;
  /** Every arrival by how it ended (dropped included): they sum to sent + dropped. */
  outcomes: Record<OutcomeClass, number>;
  /** With RunSpec.recordArrivals: every arrival, in the order they ended. */
  arrivals?: ArrivalRecord[];
  /** 429 responses without retry-after. */
  retryAfterMissing: number;
  byRequest: Record<string, RequestBreakdown>;
  /** Open model: how late the generator sent each request against its schedule. */
  lag: Summary | null;
  timeline: TimelinePoint[];
  /** CPU the generator process used during the run, ms (user + system). */
  generatorCpuMs: number;
  samples?: { latency200: number[]; ttft: number[] };
}

export type ToGenerator = { type: 'run'; id: number; spec: RunSpec } | { type: 'stop' };

export type FromGenerator =
  | { type: 'ready' }
  | { type: 'progress'; id: number; elapsedMs: number; sent: number; completed: number; inFlight: number; errors: number }
  | { type: 'result'; id: number; result: RunResult }
  | { type: 'failed'; id: number; message: string };
