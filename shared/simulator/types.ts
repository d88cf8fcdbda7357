/**
 * Public types of the Azure OpenAI simulator. Gateway tests and the load driver program against
 * these names, so change them only together with their callers.
 */

export interface SimDeployment {
  /** Deployment name: the `{deployment}` in classic URLs, the body's `model` on /openai/v1. */
  name: string;
  /** Model version reported in responses (`model`), and the tokenizer choice. Default 'gpt-4o-2024-08-06'. */
  model?: string;
  /** Standard deployments: tokens per window (minute). Absent = no token limit. */
  tpm?: number;
  /** Requests per minute. Default tpm/1000*6 (Azure's ratio). Enforced as ceil(rpm/6) per windowMs/6. */
  rpm?: number;
  /** Provisioned (PTU) mode: a leaky bucket instead of tpm/rpm windows. */
  ptu?: { tokensPerMinute: number };
  /** Sent as `x-ms-region`; also named in 429 messages. Default 'East US'. */
  region?: string;
  /** Overrides SimulatorOptions.latency for this deployment. */
  latency?: LatencyModel;
  /** Tokens generated per choice (capped by max_tokens, then finish_reason 'length'). Default 20. */
  completionTokens?: number;
}

export interface LatencyModel {
  /** Time to the first content token (and to the response headers). */
  ttftMs: number;
  /** Time between two generated tokens. */
  perTokenMs: number;
}

export type Fault =
  | { kind: 'status'; status: 500 | 502 | 503 | 504 | 408 | 429; retryAfterMs?: number }
  /** Destroy the socket without a response. */
  | { kind: 'reset' }
  /** Accept the request and never answer (until the client closes). */
  | { kind: 'hang' }
  /** Delay before the response headers (on top of the latency model). */
  | { kind: 'slow-first-byte'; delayMs: number }
  /** Stop sending after N SSE events, forever or for stallMs. Non-streaming: after half the body. */
  | { kind: 'stall-mid-stream'; afterChunks: number; stallMs?: number }
  /** Destroy the socket after N SSE events. Non-streaming: after half the body. */
  | { kind: 'reset-mid-stream'; afterChunks: number }
  /** Every request gets Azure's rate-limit 429 with this retry-after. */
  | { kind: 'storm-429'; retryAfterMs: number };

export interface FaultSpec {
  fault: Fault;
  /** Apply to the next N requests of the deployment only; absent = until cleared. */
  count?: number;
}

export interface SimulatorOptions {
  /** Default 0 (any free port). */
  port?: number;
  /** Default '127.0.0.1'. */
  host?: string;
  /** Accepted keys, sent as `api-key` or `Authorization: Bearer`. */
  apiKeys: string[];
  deployments: SimDeployment[];
  /** Length of the rate-limit "minute". Default 60000; tests shrink it. */
  windowMs?: number;
  /** max_tokens assumed by the rate-limit estimate when the request has none. Default 16. */
  defaultMaxTokens?: number;
  /** Default latency of every deployment. Default {ttftMs: 0, perTokenMs: 0}. */
  latency?: LatencyModel;
  /** Rejected (429) requests still count against the windows, as Azure documents. Default true. */
  countRejected?: boolean;
}

/**
 * Every received request ends in exactly one of served, throttled, failed or aborted
 * (or is still inFlight): received = served + throttled + failed + aborted + inFlight.
 */
export interface DeploymentStats {
  /** Requests that named this deployment and passed auth. */
  received: number;
  /** Completed 2xx responses. */
  served: number;
  /** 429 responses (rate limits and 429 faults). */
  throttled: number;
  /** Other error statuses (400, 5xx, 408) and connections the simulator reset on purpose. */
  failed: number;
  /** The client closed the connection before the response finished (hang, stall, long latency). */
  aborted: number;
  /** Prompt tokens of served responses (usage.prompt_tokens). */
  promptTokens: number;
  /** Completion tokens of served responses (usage.completion_tokens). */
  completionTokens: number;
  inFlight: number;
  /** Highest inFlight since start or the last reset. */
  peakConcurrency: number;
}

/** One request as the simulator saw it: lets tests check what a gateway sent upstream. */
export interface RecordedRequest {
  /** Wall-clock arrival time (Date.now()). */
  at: number;
  /** Path without the query string. */
  path: string;
  /** The api-version query parameter, or null. */
  apiVersion: string | null;
  /** How the key arrived. */
  auth: 'api-key' | 'bearer';
  /** The client's x-request-id header, if any. */
  clientRequestId: string | null;
  /** Our apim-request-id for the response. */
  requestId: string;
  stream: boolean;
  /** Final HTTP status; 0 while in flight or when the connection ended without a response. */
  status: number;
  /** HTTP method: POST for inference; GET/POST/DELETE on the Responses and Conversations calls by id. */
  method: string;
  /**
   * The deployment the request named: the path's on classic routes, the body's `model` on /openai/v1
   * and on responses.create. Null when it named none (calls by id, conversations): those count against
   * the deployment that created the response, or the simulator's first deployment.
   */
  model: string | null;
  /**
   * Every stored-object id the request named, in order: the path's ids (response, conversation, item),
   * `previous_response_id`, `conversation`, and the `id` of each input item (item references and
   * echoed output items). Empty for chat, completions and embeddings.
   */
  references: string[];
}

export interface Simulator {
  /** Base URL, e.g. http://127.0.0.1:34567 (no trailing slash). */
  url: string;
  port: number;
  /** Install (or with null clear) the fault of one deployment. */
  setFault(deployment: string, spec: FaultSpec | null): void;
  stats(deployment: string): DeploymentStats;
  allStats(): Record<string, DeploymentStats>;
  /** Zero the counters (inFlight stays; peakConcurrency restarts from it). */
  resetStats(): void;
  /**
   * Back to the start state: stats, rate-limit windows, PTU buckets, faults, recorded requests, and
   * the stored responses, conversations and items (background generations stop).
   */
  reset(): void;
  /** The last requests of a deployment, oldest first (at most 50). */
  recentRequests(deployment: string): RecordedRequest[];
  /** Closes the server and all open sockets, clears timers. */
  close(): Promise<void>;
}
