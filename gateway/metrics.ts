/** Prometheus metrics of one gateway instance (its own registry, so tests can run several in one process). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

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
  readonly storeErrors = new Counter({
    name: 'spillway_store_errors_total',
    help: 'Store calls that failed (the request then used the local fallback store)',
    registers: [this.registry],
  });

  constructor(defaults = true) {
    if (defaults) collectDefaultMetrics({ register: this.registry });
  }
}
