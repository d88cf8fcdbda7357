/** Prometheus metrics of one gateway instance (its own registry, so tests can run several in one process). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Lines of one pool's lane queue in one state, as the scrape reports them. */
export interface LaneDepth {
  pool: string;
  state: 'waiting' | 'delayed' | 'active';
  lines: number;
}

/** Upstream sockets of one origin: in use, idle (kept alive), and attempts waiting for one. */
export interface OriginSockets {
  origin: string;
  active: number;
  idle: number;
  queued: number;
}

export class Metrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'spillway_requests_total',
    help: 'Client requests by pool, final status and outcome (ok, upstream-broke, client-closed-mid-response, upstream-error, saturated, ...)',
    labelNames: ['pool', 'status', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly attempts = new Counter({
    name: 'spillway_upstream_attempts_total',
    help: 'Upstream attempts by deployment and outcome (status code, timeout, error; upstream-broke: the answer broke off or stalled)',
    labelNames: ['pool', 'deployment', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: 'spillway_request_duration_seconds',
    help: 'Time from request to the response headers sent to the client',
    labelNames: ['pool'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly tokens = new Counter({
    name: 'spillway_tokens_total',
    help: 'Tokens served, from upstream usage',
    labelNames: ['pool', 'deployment', 'kind'] as const,
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({
    name: 'spillway_in_flight_requests',
    help: 'Requests this instance is serving',
    registers: [this.registry],
  });
  readonly circuitOpens = new Counter({
    name: 'spillway_circuit_opens_total',
    help: 'Circuits this instance opened, by cause (breaker: failure rate; outlier: consecutive failures; probe: a failed probe)',
    labelNames: ['pool', 'deployment', 'cause'] as const,
    registers: [this.registry],
  });
  readonly cooldowns = new Counter({
    name: 'spillway_cooldowns_total',
    help: 'Deployments put in cooldown by this instance after a 429',
    labelNames: ['pool', 'deployment', 'kind'] as const,
    registers: [this.registry],
  });
  readonly connectionsRefused = new Counter({
    name: 'spillway_connections_refused_total',
    help: 'Client connections refused before a request reached the gateway: over maxConnections (closed on accept), or answered by the listener (408 headers or request too slow, 431 headers too large, 400 malformed)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly rejected = new Counter({
    name: 'spillway_rejected_requests_total',
    help: 'Requests the gateway refused before routing (401, 400 bad body or JSON, 404 unknown pool, route or id, 408, 413, 415), by status and error code',
    labelNames: ['status', 'code'] as const,
    registers: [this.registry],
  });
  readonly upstreamLatency = new Histogram({
    name: 'spillway_upstream_latency_seconds',
    help: 'Time from sending an attempt to its response headers, per deployment (every answer, any status; not connection failures or timeouts)',
    labelNames: ['pool', 'deployment'] as const,
    buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly ttft = new Histogram({
    name: 'spillway_upstream_ttft_seconds',
    help: 'Time from sending an attempt to the first body byte of the answer passed on (time to first token for streams), per deployment',
    labelNames: ['pool', 'deployment', 'stream'] as const,
    buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly clientTokens = new Counter({
    name: 'spillway_client_tokens_total',
    help: 'Tokens served by client (as the config names them; anonymous without client auth) and pool, from upstream usage',
    labelNames: ['client', 'pool', 'kind'] as const,
    registers: [this.registry],
  });
  readonly throttled = new Counter({
    name: 'spillway_throttled_requests_total',
    help: "The gateway's own 429 and 503 answers by reason: pool-full (no deployment has budget left), pool-unavailable (every deployment cooling down after 429s or out of rotation), client-quota (the client's tpm/rpm), pinned-owner (a Responses follow-up whose resource cannot serve it: 429, or 503 when out of rotation)",
    labelNames: ['pool', 'reason'] as const,
    registers: [this.registry],
  });
  readonly queueWaiting = new Gauge({
    name: 'spillway_queue_waiting_requests',
    help: "Requests this instance holds waiting for room (pools with maxWaitMs; pinned follow-ups waiting for their resource too); summed over instances, the pool's queue depth",
    labelNames: ['pool'] as const,
    registers: [this.registry],
  });
  readonly queueWait = new Histogram({
    name: 'spillway_queue_wait_seconds',
    help: 'How long requests waited for room, from the first refusal to the end of the wait, by outcome (granted, timed-out: maxWaitMs ran out, abandoned: client gone, deadline, or the pool broken rather than full)',
    labelNames: ['pool', 'outcome'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly estimatedTokens = new Counter({
    name: 'spillway_estimated_tokens_total',
    help: 'Arrival estimates (tokens reserved) of the answers passed on whole; compare with spillway_charged_tokens_total',
    labelNames: ['pool'] as const,
    registers: [this.registry],
  });
  readonly chargedTokens = new Counter({
    name: 'spillway_charged_tokens_total',
    help: "What those same answers were finally charged in their deployment's window (Standard: the estimate, raised to the usage when larger; PTU: the usage less cached tokens; the estimate when no usage came back)",
    labelNames: ['pool'] as const,
    registers: [this.registry],
  });
  /** This instance's upstream sockets per origin, read at scrape (routing/assemble.ts sets it from the forwarder). */
  upstreamSockets: (() => OriginSockets[]) | undefined;
  readonly upstreamSocketsGauge = new Gauge({
    name: 'spillway_upstream_sockets',
    help: 'Upstream sockets of this instance per origin (host:port) and state: active (an attempt on it) or idle (kept alive for the next)',
    labelNames: ['origin', 'state'] as const,
    registers: [this.registry],
    collect: () => {
      this.upstreamSocketsGauge.reset();
      for (const { origin, active, idle } of this.upstreamSockets?.() ?? []) {
        this.upstreamSocketsGauge.set({ origin, state: 'active' }, active);
        this.upstreamSocketsGauge.set({ origin, state: 'idle' }, idle);
      }
    },
  });
  readonly upstreamQueued = new Gauge({
    name: 'spillway_upstream_queued_requests',
    help: 'Attempts of this instance waiting for an upstream socket to their origin (gateway.upstreamMaxSockets reached), holding their lease',
    labelNames: ['origin'] as const,
    registers: [this.registry],
    collect: () => {
      this.upstreamQueued.reset();
      for (const { origin, queued } of this.upstreamSockets?.() ?? []) this.upstreamQueued.set({ origin }, queued);
    },
  });
  /** The lane's queue depth per pool and state, read at scrape (background/lane.ts sets it; absent: no lane, no series). */
  laneDepth: (() => Promise<LaneDepth[]>) | undefined;
  readonly backgroundQueue = new Gauge({
    name: 'spillway_background_queue_lines',
    help: 'Batch API lines in the lane, per pool and state (waiting: ready to run in fair order; delayed: waiting out a retry-after; active: running), cluster-wide, read from BullMQ at scrape',
    labelNames: ['pool', 'state'] as const,
    registers: [this.registry],
    collect: async () => {
      const depths = (await this.laneDepth?.()) ?? [];
      this.backgroundQueue.reset();
      for (const { pool, state, lines } of depths) this.backgroundQueue.set({ pool, state }, lines);
    },
  });
  readonly backgroundLines = new Counter({
    name: 'spillway_background_lines_total',
    help: 'Batch API lines this instance settled, by pool and outcome (succeeded: a 2xx recorded; failed: another answer or an error recorded; expired: the completion window ended first; cancelled)',
    labelNames: ['pool', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly backgroundTokens = new Counter({
    name: 'spillway_background_tokens_total',
    help: 'Tokens Batch API lines used, from upstream usage (not in spillway_tokens_total nor spillway_client_tokens_total, which count interactive traffic)',
    labelNames: ['pool', 'deployment', 'kind'] as const,
    registers: [this.registry],
  });
  readonly backgroundThrottles = new Counter({
    name: 'spillway_background_throttles_total',
    help: "Batch API lines sent back to wait, by pool and reason (pool-full: no deployment has room above the reserve, the pool's lane pauses; client-quota: the batch's client is at its quota, that line waits; upstream: Azure answered 429, that line waits its retry-after). Not in spillway_throttled_requests_total",
    labelNames: ['pool', 'reason'] as const,
    registers: [this.registry],
  });
  readonly probes = new Counter({
    name: 'spillway_probes_total',
    help: 'Active probes this instance sent to deployments out of rotation (open circuit, long cooldown), by result (pass: back for every instance by slow start; throttled: a 429, its retry-after sets the cooldown; fail: any other answer, a timeout or a connection failure, left out)',
    labelNames: ['pool', 'deployment', 'result'] as const,
    registers: [this.registry],
  });
  readonly probeLatency = new Histogram({
    name: 'spillway_probe_duration_seconds',
    help: 'Time from sending an active probe to the end of its answer (or its failure), per deployment',
    labelNames: ['pool', 'deployment'] as const,
    buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly storeErrors = new Counter({
    name: 'spillway_store_errors_total',
    help: 'Store calls that failed (the request then used the local fallback store)',
    registers: [this.registry],
  });

  constructor(defaults = true) {
    if (defaults) collectDefaultMetrics({ register: this.registry });
  }
}
