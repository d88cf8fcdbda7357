/**
 * Passive health shared by every instance. A 429 puts the deployment in a cluster-wide cooldown for
 * as long as Azure asked. Transport errors, timeouts, 408 and 5xx feed an opossum breaker per
 * destination in this instance; when it opens, the open state is published to the store so every
 * instance stops sending there, and the store lets one half-open probe through cluster-wide.
 */
import CircuitBreaker from 'opossum';
import type { GatewaySettings } from '../../shared/config/schema.ts';
import type { Lease } from '../../shared/store/types.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { Deployment } from '../pools.ts';
import type { LiveStore } from './live-store.ts';

/** Thrown inside the breaker so opossum counts the attempt as failed; carries the outcome out again. */
export class CountedFailure<T> extends Error {
  readonly outcome: T;
  constructor(outcome: T) {
    super('upstream attempt failed');
    this.outcome = outcome;
  }
}

export class Health {
  private readonly breakers = new Map<string, CircuitBreaker<[() => Promise<unknown>], unknown>>();

  private readonly stores: LiveStore;
  private readonly settings: GatewaySettings;
  private readonly logger: Logger;
  private readonly metrics: Metrics;

  constructor(stores: LiveStore, settings: GatewaySettings, logger: Logger, metrics: Metrics) {
    this.stores = stores;
    this.settings = settings;
    this.logger = logger;
    this.metrics = metrics;
  }

  /**
   * Runs one attempt through the deployment's breaker. `attempt` throws CountedFailure for outcomes
   * that count against the destination and resolves otherwise. Resolves with the outcome either way,
   * or with undefined when the local breaker refused (the caller picks another deployment).
   */
  async guard<T>(deployment: Deployment, lease: Lease, attempt: () => Promise<T>): Promise<{ outcome: T; failed: boolean } | undefined> {
    const breaker = this.breaker(deployment);
    // The store granted this lease, so the cluster considers the destination usable (or this is its one
    // probe); a local breaker still open from an older view must not veto that.
    if (!breaker.closed) breaker.close();
    try {
      const outcome = (await breaker.fire(attempt)) as T;
      if (lease.probe) await this.probeSucceeded(deployment);
      return { outcome, failed: false };
    } catch (error) {
      if (error instanceof CountedFailure) {
        if (lease.probe && !breaker.opened) breaker.open();
        return { outcome: error.outcome as T, failed: true };
      }
      if ((error as NodeJS.ErrnoException).code === 'EOPENBREAKER') return undefined;
      throw error;
    }
  }

  /** A 429: out of rotation for every instance until the deployment said (or the default). */
  async throttled(deployment: Deployment, retryAfterMs: number | undefined): Promise<number> {
    const duration = retryAfterMs ?? this.settings.defaultCooldownMs;
    const quotaExhausted = duration >= this.settings.quotaExhaustedAfterMs;
    const fields = { pool: deployment.pool, deployment: deployment.config.id, cooldownMs: duration };
    if (quotaExhausted) this.logger.error('deployment quota exhausted: out of rotation until its quota resets', fields);
    else this.logger.warn('deployment throttled: cooling down', fields);
    this.metrics.cooldowns.inc({ pool: deployment.pool, deployment: deployment.config.id, kind: quotaExhausted ? 'quota' : 'rate' });
    try {
      return await this.stores.publishing().cooldown(deployment.pool, deployment.config.id, duration);
    } catch (error) {
      this.logger.warn('could not publish a cooldown', { ...fields, error: (error as Error).message });
      return Date.now() + duration;
    }
  }

  private async probeSucceeded(deployment: Deployment): Promise<void> {
    this.logger.info('probe succeeded: circuit closed', { pool: deployment.pool, deployment: deployment.config.id });
    await this.stores
      .publishing()
      .closeCircuit(deployment.pool, deployment.config.id)
      .catch((error: Error) => this.logger.warn('could not publish a closed circuit', { error: error.message }));
  }

  private breaker(deployment: Deployment): CircuitBreaker<[() => Promise<unknown>], unknown> {
    const existing = this.breakers.get(deployment.key);
    if (existing) return existing;
    const options = this.settings.breaker;
    const breaker = new CircuitBreaker((attempt: () => Promise<unknown>) => attempt(), {
      timeout: false, // attempts carry their own deadlines
      errorThresholdPercentage: options.errorThresholdPercentage,
      volumeThreshold: options.volumeThreshold,
      rollingCountTimeout: options.rollingCountTimeoutMs,
      resetTimeout: options.resetTimeoutMs,
      name: deployment.key,
    });
    breaker.on('open', () => {
      this.logger.warn('circuit opened: deployment out of rotation for every instance', {
        pool: deployment.pool,
        deployment: deployment.config.id,
        openMs: options.resetTimeoutMs,
      });
      this.metrics.circuitOpens.inc({ pool: deployment.pool, deployment: deployment.config.id });
      this.stores
        .publishing()
        .openCircuit(deployment.pool, deployment.config.id, options.resetTimeoutMs)
        .catch((error: Error) => this.logger.warn('could not publish an open circuit', { error: error.message }));
    });
    this.breakers.set(deployment.key, breaker);
    return breaker;
  }

  close(): void {
    for (const breaker of this.breakers.values()) breaker.shutdown();
  }
}
