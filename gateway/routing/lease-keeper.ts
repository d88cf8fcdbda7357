/**
 * Keeps this instance's live leases alive. A lease expires leaseMs after its last renewal, so a
 * killed instance's in-flight counts return to true within leaseMs; a live one renews every third.
 */
import type { Lease, Store } from '../../shared/store/types.ts';
import type { Logger } from '../logger.ts';
import type { LiveStore } from './live-store.ts';

export class LeaseKeeper {
  /** Each live lease, with the store that granted it (renewed there). */
  private readonly live = new Map<Lease, Store>();
  private readonly timer: NodeJS.Timeout;
  /** A round under way: the next tick skips rather than overlap it (a large renewal is many calls in a row). */
  private renewing = false;

  private readonly stores: LiveStore;
  private readonly leaseMs: number;
  private readonly logger: Logger;

  constructor(stores: LiveStore, leaseMs: number, logger: Logger) {
    this.stores = stores;
    this.leaseMs = leaseMs;
    this.logger = logger;
    this.timer = setInterval(() => void this.renew(), Math.max(250, Math.floor(leaseMs / 3)));
    this.timer.unref();
  }

  track(lease: Lease, grantedBy: Store): void {
    this.live.set(lease, grantedBy);
  }

  untrack(lease: Lease): void {
    this.live.delete(lease);
  }

  /** Leases being renewed now (tests and shutdown). */
  get size(): number {
    return this.live.size;
  }

  private async renew(): Promise<void> {
    if (this.live.size === 0 || this.renewing) return;
    this.renewing = true;
    try {
      await this.stores.renew([...this.live.keys()], this.leaseMs, (lease) => this.live.get(lease)!);
    } catch (error) {
      this.logger.warn('lease renewal failed', { error: (error as Error).message, leases: this.live.size });
    } finally {
      this.renewing = false;
    }
  }

  /**
   * Hands back every lease still tracked, each where it was granted (shutdown: requests that did not
   * end in time). Releasing is idempotent: a request that releases its own later changes nothing.
   */
  async releaseAll(): Promise<void> {
    const left = [...this.live];
    this.live.clear();
    if (left.length === 0) return;
    this.logger.warn('leases released at close: their requests had not ended', { leases: left.length });
    await Promise.all(
      left.map(([lease, store]) =>
        store.release(lease).catch((error: Error) => this.logger.warn('lease release failed', { error: error.message })),
      ),
    );
  }

  close(): void {
    clearInterval(this.timer);
  }
}
