/**
 * Leases: a request holds one per attempt, from the store's grant to its release. `HeldLease` owns
 * that lifetime: it is tracked for renewal from the grant on, and its `release` settles it once,
 * whichever exit path calls it first, so the attempt loop releases in a `finally` and cannot leak one.
 */
import { randomUUID } from 'node:crypto';
import type { GatewaySettings } from '../../shared/config/schema.ts';
import type { AcquireResult, Lease, QueueTicket, Store, WindowObservation } from '../../shared/store/types.ts';
import type { Logger } from '../logger.ts';
import type { Deployment, Pool } from '../pools.ts';
import type { LeaseKeeper } from './lease-keeper.ts';
import type { LiveStore } from './live-store.ts';

export type Refusal = Extract<AcquireResult, { ok: false }>;

export type Grant = { ok: true; lease: HeldLease; store: Store } | { ok: false; refusal: Refusal; store: Store; lease?: undefined };

export class HeldLease {
  readonly lease: Lease;
  readonly deployment: Deployment;
  /** The store that granted it: the lease is released there. */
  readonly store: Store;
  private released = false;
  private readonly keeper: LeaseKeeper;
  private readonly logger: Logger;

  constructor(lease: Lease, deployment: Deployment, store: Store, keeper: LeaseKeeper, logger: Logger) {
    this.lease = lease;
    this.deployment = deployment;
    this.store = store;
    this.keeper = keeper;
    this.logger = logger;
    keeper.track(lease, store);
  }

  /** Hands the lease back with what the attempt cost. The first call counts; later ones do nothing. */
  release(chargedTokens?: number, observed?: WindowObservation): Promise<void> {
    return this.end((store) => store.release(this.lease, chargedTokens, observed));
  }

  /** Hands the lease back unused (its request never left): its booking leaves the window whole. */
  withdraw(): Promise<void> {
    return this.end((store) => store.withdraw(this.lease));
  }

  private async end(call: (store: Store) => Promise<void>): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.keeper.untrack(this.lease);
    try {
      await call(this.store);
    } catch (error) {
      // The lease expires on its own within leaseMs.
      this.logger.warn('lease release failed', { error: (error as Error).message });
    }
  }
}

export interface LeaseRequest {
  pool: Pool;
  estimatedTokens: number;
  /** A Batch API line: admitted only under (1 − backgroundReserve) of every budget, and never while interactive requests wait. */
  background?: boolean;
  backgroundReserve?: number;
}

export class Leasing {
  private readonly stores: LiveStore;
  private readonly keeper: LeaseKeeper;
  private readonly settings: GatewaySettings;
  private readonly logger: Logger;

  constructor(stores: LiveStore, keeper: LeaseKeeper, settings: GatewaySettings, logger: Logger) {
    this.stores = stores;
    this.keeper = keeper;
    this.settings = settings;
    this.logger = logger;
  }

  /** Asks the live store for a deployment of the pool, none of `exclude`; in the wait queue with `queue`. */
  async acquire(request: LeaseRequest, exclude: readonly string[], queue: QueueTicket | undefined): Promise<Grant> {
    const { store, result } = await this.stores.acquire({
      queue,
      pool: request.pool.layout,
      leaseId: randomUUID(),
      leaseMs: this.settings.leaseMs,
      estimatedTokens: request.estimatedTokens,
      exclude,
      // A deployment back from an open circuit or a long cooldown takes a growing share (the pool's slow start).
      slowStartMs: request.pool.config.slowStartMs,
      background: request.background ? { reserve: request.backgroundReserve ?? 0 } : undefined,
    });
    if (!result.ok) return { ok: false, refusal: result, store };
    const deployment = request.pool.deployments.get(result.lease.deploymentId);
    if (!deployment) {
      await store.release(result.lease).catch((error: Error) => this.logger.warn('lease release failed', { error: error.message }));
      throw new Error(`store chose unknown deployment ${result.lease.deploymentId}`);
    }
    return { ok: true, lease: new HeldLease(result.lease, deployment, store, this.keeper, this.logger), store };
  }
}
