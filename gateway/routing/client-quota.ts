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
  | { admitted: true; booking: QuotaBooking | undefined; remaining: Remaining }
  | { admitted: false; error: AzureError; remaining: Remaining };

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
      await this.stores.publishing().releaseQuota(this.lease, chargedTokens);
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

  /** Books a request of a client that has a quota. */
  async check(client: ClientIdentity, estimatedTokens: number): Promise<QuotaCheck> {
    let result;
    try {
      result = await this.stores.publishing().acquireQuota({ subject: client.name, tpm: client.tpm, rpm: client.rpm, estimatedTokens });
    } catch (error) {
      // Quotas are a fairness tool; with the store gone the client is let through rather than refused.
      this.logger.warn('client quota unavailable: request admitted unchecked', { client: client.name, error: (error as Error).message });
      return { admitted: true, booking: undefined, remaining: {} };
    }
    const remaining = { tokens: result.remainingTokens, requests: result.remainingRequests };
    if (result.ok) return { admitted: true, booking: new QuotaBooking(result.lease, this.stores, this.logger), remaining };
    return { admitted: false, error: errors.clientQuota(client.name, result.reason, result.retryAfterMs), remaining };
  }
}
