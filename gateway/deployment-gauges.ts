/**
 * Each deployment's state against its budget, as Prometheus gauges filled when /metrics is scraped:
 * tokens and requests in the current window beside the configured tpm and rpm, leases in flight,
 * the cooldown left, the circuit's state, whether an operator drained it, and its share of new
 * requests while it slow-starts back.
 *
 * The figures come from the live store's snapshot (the shared store's view, the same on every
 * instance; this instance's own view while Redis is down), one per pool per scrape, whichever of the
 * gauges asks first, and at most one per pool at a time: a scrape that arrives while the previous
 * one's snapshot is still out waits for that one. A pool whose snapshot has not answered within the
 * scrape budget is left out of the live gauges for that scrape (its configured budgets are still
 * reported, and `spillway_pool_snapshot_ok` is 0): a slow store never hangs the scrape, and no stale
 * figure is reported as current.
 *
 * The pools are asked for at every scrape, so a config reload that swaps them is seen at the next one:
 * a removed deployment's series disappear, an added one's appear.
 */
import { Gauge, type Registry } from 'prom-client';
import type { CircuitState, DeploymentSnapshot, PoolLayout } from '../shared/store/types.ts';
import { slowStartLength, slowStartShare } from '../shared/store/slow-start.ts';
import type { Pool } from './pools.ts';

/** What the gauges read: the live store (routing/live-store.ts) in the gateway. */
export interface SnapshotSource {
  snapshot(pool: PoolLayout): Promise<DeploymentSnapshot[]>;
}

export interface DeploymentGaugesOptions {
  registry: Registry;
  /** The pools in force now (a config reload may swap them between scrapes). */
  pools: () => Iterable<Pool>;
  store: SnapshotSource;
  /** How long a scrape waits for the pools' snapshots. Default DEFAULT_SCRAPE_BUDGET_MS. */
  budgetMs?: number;
}

/** Well inside Prometheus' default scrape timeout (10 s), and long enough for a healthy Redis many times over. */
export const DEFAULT_SCRAPE_BUDGET_MS = 500;

const CIRCUIT_STATES: readonly CircuitState[] = ['closed', 'half-open', 'open'];

interface PoolReading {
  pool: Pool;
  /** Undefined when the store did not answer within the budget (or failed). */
  snapshot: DeploymentSnapshot[] | undefined;
}

export class DeploymentGauges {
  private readonly pools: () => Iterable<Pool>;
  private readonly store: SnapshotSource;
  private readonly budgetMs: number;
  /** Snapshots still out, per pool: every gauge of a scrape shares one, and a scrape that finds one still out waits for it. */
  private readonly pending = new Map<string, { layout: PoolLayout; snapshot: Promise<DeploymentSnapshot[] | undefined> }>();

  constructor(options: DeploymentGaugesOptions) {
    this.pools = options.pools;
    this.store = options.store;
    this.budgetMs = options.budgetMs ?? DEFAULT_SCRAPE_BUDGET_MS;
    const registers = [options.registry];
    const labelNames = ['pool', 'deployment'] as const;
    // Inside a collect, `this` is the gauge: these reach the instance.
    const currentPools = () => this.pools();
    const read = () => this.read();

    /** A gauge of the configured budget: reported for every deployment that has one, whatever the store says. */
    const budget = (name: string, help: string, of: (pool: Pool, id: string) => number | undefined) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          for (const pool of currentPools())
            for (const id of pool.deployments.keys()) {
              const value = of(pool, id);
              if (value !== undefined) this.set({ pool: pool.name, deployment: id }, value);
            }
        },
      });
    /** A gauge of the live snapshot: reported for the pools whose snapshot answered in time. */
    const live = (name: string, help: string, of: (d: DeploymentSnapshot, now: number, pool: Pool) => number) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        async collect() {
          const readings = await read();
          this.reset();
          const now = Date.now();
          for (const { pool, snapshot } of readings)
            for (const d of snapshot ?? []) this.set({ pool: pool.name, deployment: d.id }, of(d, now, pool));
        },
      });

    budget(
      'spillway_deployment_tpm',
      'Configured token budget per window (tpm) of each deployment that has one',
      (pool, id) => config(pool, id)?.tpm,
    );
    budget(
      'spillway_deployment_rpm',
      'Configured request budget per window (rpm) of each deployment that has one',
      (pool, id) => config(pool, id)?.rpm,
    );
    live(
      'spillway_deployment_tokens_in_window',
      "Tokens booked in the deployment's sliding window (about a minute), cluster-wide; against spillway_deployment_tpm",
      (d) => d.tokensInWindow,
    );
    live(
      'spillway_deployment_requests_in_window',
      "Requests booked in the deployment's sliding window, cluster-wide; against spillway_deployment_rpm",
      (d) => d.requestsInWindow,
    );
    live('spillway_deployment_in_flight', 'Leases in flight on the deployment, cluster-wide (every instance)', (d) => d.inFlight);
    live('spillway_deployment_cooldown_seconds', 'Seconds left of the deployment’s cooldown after a 429 (0: not cooling down)', (d, now) =>
      Math.max(0, (d.cooldownUntil - now) / 1000),
    );
    live('spillway_deployment_drained', 'Drained by an operator (1) until enabled, else 0', (d) => (d.drained ? 1 : 0));
    live(
      'spillway_deployment_slow_start_share',
      "Share of new requests the deployment may take while it slow-starts back from an open circuit or a long cooldown (0.1 growing to 1 over the pool's slowStartMs); 1 when not slow-starting",
      (d, now, pool) => slowStartShare(d.slowStartSince, now, slowStartLength(pool.config.slowStartMs)) ?? 1,
    );
    new Gauge({
      name: 'spillway_deployment_circuit',
      help: 'The deployment’s circuit: 1 for its current state (closed, half-open, open), 0 for the others',
      labelNames: ['pool', 'deployment', 'state'] as const,
      registers,
      async collect() {
        const readings = await read();
        this.reset();
        for (const { pool, snapshot } of readings)
          for (const d of snapshot ?? [])
            for (const state of CIRCUIT_STATES) this.set({ pool: pool.name, deployment: d.id, state }, d.circuit === state ? 1 : 0);
      },
    });
    new Gauge({
      name: 'spillway_pool_snapshot_ok',
      help: 'Whether the store answered this scrape’s snapshot of the pool in time (1); 0: its live deployment gauges are left out of this scrape',
      labelNames: ['pool'] as const,
      registers,
      async collect() {
        const readings = await read();
        this.reset();
        for (const { pool, snapshot } of readings) this.set({ pool: pool.name }, snapshot ? 1 : 0);
      },
    });
  }

  /** Every pool's snapshot, or undefined for those that did not answer within the budget. */
  private async read(): Promise<PoolReading[]> {
    const pools = [...this.pools()];
    let timer: NodeJS.Timeout | undefined;
    const budget = new Promise<undefined>((resolve) => {
      timer = setTimeout(resolve, this.budgetMs, undefined);
      timer.unref();
    });
    try {
      return await Promise.all(pools.map(async (pool) => ({ pool, snapshot: await Promise.race([this.snapshotOf(pool), budget]) })));
    } finally {
      clearTimeout(timer);
    }
  }

  /** The pool's snapshot: the one still out for it, or a new one. Undefined when the store failed. */
  private snapshotOf(pool: Pool): Promise<DeploymentSnapshot[] | undefined> {
    const out = this.pending.get(pool.name);
    if (out && out.layout === pool.layout) return out.snapshot;
    const snapshot = this.store.snapshot(pool.layout).catch(() => undefined);
    const entry = { layout: pool.layout, snapshot };
    this.pending.set(pool.name, entry);
    void snapshot.finally(() => {
      if (this.pending.get(pool.name) === entry) this.pending.delete(pool.name);
    });
    return snapshot;
  }
}

/** Registers the deployment gauges on the registry; they read the pools and the store at every scrape. */
export function registerDeploymentGauges(options: DeploymentGaugesOptions): DeploymentGauges {
  return new DeploymentGauges(options);
}

function config(pool: Pool, id: string) {
  return pool.deployments.get(id)?.config;
}
