/**
 * Passive health shared by every instance. A 429 puts the deployment in a cluster-wide cooldown for
 * as long as Azure asked. Every attempt runs through an opossum breaker per destination in this
 * instance, and the breaker hears of it when the answer is over, not when its headers arrive: a body
 * that breaks off or stalls fails like a 5xx, a client that leaves counts against nobody. Beside the
 * breaker's rate, outlier.ts ejects a deployment after a run of consecutive failures, for longer
 * each time. Either way the open state is published to the store, so every instance stops sending
 * there and the store lets one half-open probe through cluster-wide; never for the last deployment
 * of a pool in rotation.
 */
import CircuitBreaker from 'opossum';
import type { GatewaySettings } from '../../shared/config/schema.ts';
import type { Lease, PoolLayout, Store } from '../../shared/store/types.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { CurrentPools, Deployment } from '../pools.ts';
import type { LiveStore } from './live-store.ts';
import { Rotation } from './outlier.ts';

/** Thrown inside the breaker so opossum counts the attempt as failed; carries the outcome out again. */
export class CountedFailure<T> extends Error {
  readonly outcome: T;
  constructor(outcome: T) {
    super('upstream attempt failed');
    this.outcome = outcome;
  }
}

/** How an answer that arrived ended: read whole, cut by upstream (reset, or idle past the timeout), or left by the client. */
export type AnswerEnd = 'whole' | 'broke' | 'left';

/** A lease as health needs it: the deployment, and the store that granted it (a HeldLease is one). */
export interface GuardedLease {
  lease: Lease;
  deployment: Deployment;
  store: Store;
}

export interface Guarded<T> {
  outcome: T;
  /** True when the attempt counted against the deployment already (a fault before any body). */
  failed: boolean;
  /**
   * How the answer ended; only now do the breaker and the outlier detector count the attempt (and a
   * probe close or reopen the circuit). The first call counts. Resolves once that is published.
   */
  end(how: AnswerEnd): Promise<void>;
}

/** Fails the breaker's call for a body that broke off. */
class BrokenAnswer extends Error {}
/** Ends the breaker's call of a client that left: filtered, so it does not count against the destination. */
class Uncounted extends Error {}

type Breaker = CircuitBreaker<[() => Promise<void>], void>;

/** What a breaker judges: the endpoint and the deployment name there. */
const targetOf = (deployment: Deployment) => `${deployment.config.endpoint} ${deployment.config.deployment}`;

export class Health {
  private readonly breakers = new Map<string, Breaker>();
  /** Where each breaker's deployment pointed when it was made (targetOf). */
  private readonly targets = new Map<string, string>();
  private readonly rotation: Rotation;

  private readonly stores: LiveStore;
  private readonly settings: GatewaySettings;
  private readonly logger: Logger;
  private readonly metrics: Metrics;
  /** The config in force (a reload swaps it); absent: the pools never change (tests). */
  private readonly config: CurrentPools | undefined;

  constructor(stores: LiveStore, settings: GatewaySettings, logger: Logger, metrics: Metrics, config?: CurrentPools) {
    this.stores = stores;
    this.settings = settings;
    this.logger = logger;
    this.metrics = metrics;
    this.config = config;
    this.rotation = new Rotation(stores, settings.outlier, logger, metrics);
  }

  /**
   * Runs one attempt through the deployment's breaker. `attempt` throws CountedFailure for outcomes
   * that count against the destination and resolves otherwise; a resolved attempt is counted once
   * `end` says how its answer ended. Resolves with the outcome when `attempt` settles, or with
   * undefined when the local breaker refused (the caller picks another deployment).
   */
  async guard<T>(pool: PoolLayout, held: GuardedLease, attempt: () => Promise<T>): Promise<Guarded<T> | undefined> {
    const { deployment, lease } = held;
    const breaker = this.breaker(pool, deployment);
    if (held.store !== this.stores.fallback) {
      // The cluster's store granted this lease, so the cluster considers the destination usable (or this
      // is its one probe): a local breaker still open from an older view must not veto that. A lease of
      // this instance's own fallback view is not the cluster's word: the local breaker stands then.
      if (!breaker.closed) breaker.close();
      if (!lease.probe) this.rotation.outliers.markIn(deployment.key);
    }
    // No async function and no promise per step: what is made here is held for as long as the
    // answer flows (a stream's life), a suspended frame with it if there were one.
    let first!: (first: { outcome: T } | { error: unknown }) => void;
    const headed = new Promise<{ outcome: T } | { error: unknown }>((resolve) => (first = resolve));
    let answered!: (how: AnswerEnd) => void;
    const fired = breaker.fire(
      () =>
        new Promise<void>((resolve, reject) => {
          // How the answer ended (`end`): the breaker counts the attempt then.
          // The first word only: every path out of an attempt says 'left' again afterwards, and an error
          // built for nothing costs its stack trace.
          let said = false;
          answered = (how) => {
            if (said) return;
            said = true;
            if (how === 'broke') reject(new BrokenAnswer('the answer broke off'));
            else if (how === 'left') reject(new Uncounted('the client left'));
            else resolve();
          };
          attempt().then((outcome) => first({ outcome }), reject);
        }),
    );
    // What the attempt comes to once the breaker counted it, published before `end` resolves. Never rejects.
    // A breaker that settles before any outcome (the attempt failed, or the breaker refused) is the first word.
    const recorded = fired.then(
      () => {
        first({ error: undefined });
        return this.succeeded(pool, held);
      },
      (error: unknown) => {
        first({ error });
        return this.failed(pool, held, error);
      },
    );
    const result = await headed;
    if ('outcome' in result) {
      const end = (how: AnswerEnd) => {
        answered(how);
        return recorded;
      };
      return { outcome: result.outcome, failed: false, end };
    }
    const { error } = result;
    if (error instanceof CountedFailure) {
      await recorded;
      return { outcome: error.outcome as T, failed: true, end: () => recorded };
    }
    if ((error as NodeJS.ErrnoException | undefined)?.code === 'EOPENBREAKER') return undefined;
    throw error;
  }

  /** A 429: out of rotation for every instance until the deployment said (or the default). */
  async throttled(deployment: Deployment, retryAfterMs: number | undefined): Promise<number> {
    const duration = retryAfterMs ?? this.settings.defaultCooldownMs;
    const quotaExhausted = duration >= this.settings.quotaExhaustedAfterMs;
    const fields = { pool: deployment.pool, deployment: deployment.config.id, cooldownMs: duration };
    if (quotaExhausted) this.logger.error('deployment quota exhausted: out of rotation until its quota resets', fields);
    else this.logger.warn('deployment throttled: cooling down', fields);
    this.metrics.cooldowns.inc({ pool: deployment.pool, deployment: deployment.config.id, kind: quotaExhausted ? 'quota' : 'rate' });
    // The live store never rejects: a cooldown it cannot publish is kept in this instance's own view.
    // A long one ends in the pool's slow start (and the prober checks the deployment meanwhile).
    const slowStart = duration >= this.settings.longCooldownMs;
    return this.stores.cooldown(deployment.pool, deployment.config.id, duration, slowStart ? { slowStart } : undefined);
  }

  /** The answer came back whole (or was a 4xx, a 429: the deployment's own word): the run of failures ends; a probe closes the circuit. */
  private async succeeded(pool: PoolLayout, held: GuardedLease): Promise<void> {
    const { deployment, lease } = held;
    this.rotation.outliers.succeeded(deployment.key);
    if (!lease.probe) return;
    this.rotation.outliers.markIn(deployment.key);
    this.logger.info('probe succeeded: circuit closed', { pool: pool.name, deployment: deployment.config.id });
    await this.stores.closeCircuit(deployment.pool, deployment.config.id);
  }

  /** The breaker counted a failure (or filtered a client that left): a failed probe, or the end of a run, takes the deployment out. */
  private async failed(pool: PoolLayout, held: GuardedLease, error: unknown): Promise<void> {
    if (!(error instanceof CountedFailure || error instanceof BrokenAnswer)) return;
    const { deployment, lease } = held;
    const { outliers } = this.rotation;
    // A failed probe: the deployment failed its one trial, out again for longer than last time.
    if (!lease.probe && !outliers.failed(deployment.key)) return;
    const layout = this.layoutNow(pool, deployment);
    if (!layout) return;
    const ejection = outliers.next(deployment.key);
    const cause = lease.probe ? 'probe' : 'outlier';
    const out = await this.rotation.takeOut(layout, deployment, ejection.durationMs, cause, ejection, lease.probe);
    // Kept in rotation as its pool's last: here too.
    if (!out) this.breakers.get(deployment.key)?.close();
  }

  /** The store refused the pool as unavailable: see Rotation.rescue. True when the request should ask the store again. */
  rescue(pool: PoolLayout, exclude: readonly string[]): Promise<boolean> {
    return this.rotation.rescue(pool, exclude);
  }

  /** True when each of `ids` is out of rotation (an open circuit, or drained), not busy (a cooldown, its budget). */
  async outOfRotation(pool: PoolLayout, ids: readonly string[]): Promise<boolean> {
    const snapshot = await this.stores.snapshot(pool);
    const chosen = snapshot.filter((d) => ids.includes(d.id));
    return chosen.length > 0 && chosen.every((d) => d.circuit !== 'closed' || d.drained);
  }

  private breaker(pool: PoolLayout, deployment: Deployment): Breaker {
    const existing = this.breakers.get(deployment.key);
    if (existing) return existing;
    const options = this.settings.breaker;
    const breaker: Breaker = new CircuitBreaker((attempt: () => Promise<void>) => attempt(), {
      timeout: false, // attempts carry their own deadlines
      errorThresholdPercentage: options.errorThresholdPercentage,
      volumeThreshold: options.volumeThreshold,
      rollingCountTimeout: options.rollingCountTimeoutMs,
      resetTimeout: options.resetTimeoutMs,
      // opossum has no neutral outcome: a client that left counts as a success in its rate, not as a failure.
      errorFilter: (error: unknown) => error instanceof Uncounted,
      name: deployment.key,
    });
    breaker.on('open', () => {
      const layout = this.layoutNow(pool, deployment);
      if (!layout) return;
      void this.rotation.takeOut(layout, deployment, options.resetTimeoutMs, 'breaker').then((out) => {
        // Kept in rotation as its pool's last: here too, or this instance's own view would keep refusing it.
        if (!out) breaker.close();
      });
    });
    this.breakers.set(deployment.key, breaker);
    this.targets.set(deployment.key, targetOf(deployment));
    return breaker;
  }

  /**
   * The pool as the config in force has it, for a decision about the whole pool (never its last
   * deployment in rotation): the layout a request or a breaker captured may predate a reload.
   * Undefined when the deployment is no longer configured: it is not taken out, its state in the
   * store is left alone to expire.
   */
  private layoutNow(seen: PoolLayout, deployment: Deployment): PoolLayout | undefined {
    if (!this.config) return seen;
    const pool = this.config.current.pools.get(deployment.pool);
    return pool?.deployments.has(deployment.config.id) ? pool.layout : undefined;
  }

  /**
   * After a reload: the breakers of deployments no longer configured, or now somewhere else (another
   * endpoint or deployment name), are dropped; a deployment that comes back starts with a new one.
   */
  forget(configured: Iterable<Deployment>): void {
    const targets = new Map([...configured].map((d) => [d.key, targetOf(d)]));
    for (const [key, breaker] of this.breakers) {
      if (targets.get(key) === this.targets.get(key)) continue;
      breaker.shutdown();
      this.breakers.delete(key);
      this.targets.delete(key);
    }
  }

  close(): void {
    for (const breaker of this.breakers.values()) breaker.shutdown();
  }
}
