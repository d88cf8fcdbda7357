/**
 * The one place that decides which store the request path talks to. The shared store (Redis) holds
 * the cluster's state; when a routing decision cannot reach it, this instance decides on its own
 * in-memory view instead, so requests keep being served.
 *
 * Today only the routing decision itself (acquire) falls back; cooldowns, circuits, renewals and
 * client quotas are published to the shared store alone (`publishing`), and fail while it is away.
 * Changing where those go during an outage is a change to this module only.
 */
import type { AcquireInput, AcquireResult, Store } from '../../shared/store/types.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';

export interface Acquired {
  /** The store that made the decision: the lease is released there, and a waiter's ticket lives there. */
  store: Store;
  result: AcquireResult;
}

export class LiveStore {
  readonly shared: Store;
  /** This instance's own view, used while the shared store does not answer. */
  readonly fallback: Store;
  private readonly metrics: Metrics;
  private readonly logger: Logger;

  constructor(shared: Store, fallback: Store, metrics: Metrics, logger: Logger) {
    this.shared = shared;
    this.fallback = fallback;
    this.metrics = metrics;
    this.logger = logger;
  }

  /** Chooses a deployment on the shared store, or on this instance's own view when the shared store fails. */
  async acquire(input: AcquireInput): Promise<Acquired> {
    try {
      return { store: this.shared, result: await this.shared.acquire(input) };
    } catch (error) {
      this.metrics.storeErrors.inc();
      this.logger.warn('store unavailable: routing on this instance’s own view', { error: (error as Error).message });
      return { store: this.fallback, result: await this.fallback.acquire(input) };
    }
  }

  /** Where state every instance must see is published: cooldowns, circuits, lease renewals, client quotas. */
  publishing(): Store {
    return this.shared;
  }

  /** True when the shared store answers (readiness). */
  ping(): Promise<boolean> {
    return this.shared.ping();
  }

  close(): Promise<void> {
    return this.fallback.close();
  }
}
