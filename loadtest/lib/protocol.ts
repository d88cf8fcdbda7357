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
