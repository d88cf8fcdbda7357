/**
 * Client quotas (clients with tpm or rpm in the config): each request is booked against its client's
 * own window before a deployment is chosen, and settled with the real usage afterwards. The token
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

  constructor(lease: QuotaLease, stores: LiveStore, logger: Logger) {
    this.lease = lease;
    this.stores = stores;
    this.logger = logger;
  }

  /** Corrects the booking to what the request really cost; undefined keeps the estimate. */
  async settle(chargedTokens: number | undefined): Promise<void> {
    try {
      await this.stores.releaseQuota(this.lease, chargedTokens);
    } catch (error) {
      this.logger.warn('client quota settlement failed', { error: (error as Error).message });
    }
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
