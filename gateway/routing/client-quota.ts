/**
 * Client quotas (clients with tpm or rpm in the config): each request is booked against its client's
 * own window, sent in the same tick as its first acquire (on one Redis both leave in one write;
 * on a cluster they go to their own shards at once) and read before that grant is used, and settled
 * with the real usage afterwards, beside the lease's release. The token
 * quota is exact: real usage when known, no tokens when no deployment was reached; the request
 * itself stays booked against its rpm, whatever the outcome.
 */
import type { QuotaLease } from '../../shared/store/types.ts';
import { errors, type AzureError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { LiveStore } from './live-store.ts';
import type { ClientIdentity } from './proxied-request.ts';

export type QuotaCheck =
  { admitted: true; booking: QuotaBooking; remaining: Remaining } | { admitted: false; error: AzureError; remaining: Remaining };

interface Remaining {
  tokens?: number;
  requests?: number;
}

export function hasQuota(client: ClientIdentity): boolean {
  return client.tpm !== undefined || client.rpm !== undefined;
}

export class QuotaBooking {
  private readonly lease: QuotaLease;
  private readonly stores: LiveStore;
  private readonly logger: Logger;
  private settled = false;

  constructor(lease: QuotaLease, stores: LiveStore, logger: Logger) {
    this.lease = lease;
    this.stores = stores;
    this.logger = logger;
  }

  /** Corrects the booking to what the request really cost; undefined keeps the estimate. The first call counts. */
  async settle(chargedTokens: number | undefined): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    try {
      await this.stores.releaseQuota(this.lease, chargedTokens);
    } catch (error) {
      this.logger.warn('client quota settlement failed', { error: (error as Error).message });
    }
  }
}

/**
 * A quota check under way: sent before the request's first acquire, its verdict read after it (so the
 * two share a round trip), settled once whichever path gets there first.
 */
export class PendingQuota {
  private readonly check: Promise<QuotaCheck>;
  /** The admitted booking, once the verdict came: settled at once then, in the same tick as the lease's release. */
  private booking: QuotaBooking | undefined;

  constructor(check: Promise<QuotaCheck>) {
    this.check = check.then((result) => {
      if (result.admitted) this.booking = result.booking;
      return result;
    });
    // A failed check is the caller's when it reads the verdict; never an unhandled rejection meanwhile.
    this.check.catch(() => {});
  }

  verdict(): Promise<QuotaCheck> {
    return this.check;
  }

  /** Settles an admitted booking with the request's cost; a refused or failed check has nothing to settle. */
  settle(chargedTokens: number | undefined): Promise<void> {
    if (this.booking) return this.booking.settle(chargedTokens);
    return this.check.then(
      (result) => (result.admitted ? result.booking.settle(chargedTokens) : undefined),
      () => undefined,
    );
  }
}

export class ClientQuotas {
  private readonly stores: LiveStore;
  private readonly logger: Logger;

  constructor(stores: LiveStore, logger: Logger) {
    this.stores = stores;
    this.logger = logger;
  }

  /** Books a request of a client that has a quota (in this instance's own view while Redis is away: quotas are kept, not waived). */
  async check(client: ClientIdentity, estimatedTokens: number): Promise<QuotaCheck> {
    const result = await this.stores.acquireQuota({ subject: client.name, tpm: client.tpm, rpm: client.rpm, estimatedTokens });
    const remaining = { tokens: result.remainingTokens, requests: result.remainingRequests };
    if (result.ok) return { admitted: true, booking: new QuotaBooking(result.lease, this.stores, this.logger), remaining };
    return { admitted: false, error: errors.clientQuota(client.name, result.reason, result.retryAfterMs), remaining };
  }
}
