/**
 * Keeps this instance's live leases alive. A lease expires leaseMs after its last renewal, so a
 * killed instance's in-flight counts return to true within leaseMs; a live one renews every third.
 */
import type { Logger } from './logger.ts';
import type { Lease, Store } from '../shared/store/types.ts';

export class LeaseKeeper {
  private readonly live = new Set<Lease>();
  private readonly timer: NodeJS.Timeout;

  private readonly store: () => Store;
  private readonly leaseMs: number;
  private readonly logger: Logger;

  constructor(store: () => Store, leaseMs: number, logger: Logger) {
    this.store = store;
    this.leaseMs = leaseMs;
    this.logger = logger;
    this.timer = setInterval(() => void this.renew(), Math.max(250, Math.floor(leaseMs / 3)));
    this.timer.unref();
  }

  track(lease: Lease): void {
    this.live.add(lease);
  }

  untrack(lease: Lease): void {
    this.live.delete(lease);
  }

  private async renew(): Promise<void> {
    if (this.live.size === 0) return;
    try {
      await this.store().renew([...this.live], this.leaseMs);
    } catch (error) {
      this.logger.warn('lease renewal failed', { error: (error as Error).message, leases: this.live.size });
    }
  }

  close(): void {
    clearInterval(this.timer);
  }
}
