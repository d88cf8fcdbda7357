/**
 * The store holds every piece of state that instances share: leases (in-flight requests), token and
 * request usage windows, 429 cooldowns and published circuit state. Two implementations keep one
 * contract: RedisStore (atomic Lua scripts, time from Redis TIME) and MemoryStore (one process).
 */

export type Strategy = 'least-requests' | 'round-robin' | 'random' | 'power-of-two' | 'weighted';

export const STRATEGIES: readonly Strategy[] = ['least-requests', 'round-robin', 'random', 'power-of-two', 'weighted'];

/** What the store needs to know about one deployment to decide whether it can take a request. */
export interface DeploymentBudget {
  id: string;
  /** Lower is preferred; a higher tier only takes what the best tier with an eligible deployment cannot. */
  priority: number;
  /** Relative share for the `weighted` strategy. */
  weight: number;
  /** Tokens per sliding window (a minute in production). Absent: not limited. */
  tpm?: number;
  /** Requests per sliding window; also enforced as rpm/6 per sixth of the window (Azure's 10 s window). */
  rpm?: number;
}

export interface PoolLayout {
  name: string;
  strategy: Strategy;
  deployments: readonly DeploymentBudget[];
}

export interface AcquireInput {
  pool: PoolLayout;
  /** Unique per attempt, chosen by the caller (a UUID). */
  leaseId: string;
  /** The lease expires this long from now unless renewed; a dead instance's leases are reaped after it. */
  leaseMs: number;
  /** Tokens reserved on the chosen deployment's window (0 when unknown). */
  estimatedTokens: number;
  /** Deployments this request has already tried; never chosen again. */
  exclude?: readonly string[];
}

/** A granted attempt. Hand it back to `release` exactly once. */
export interface Lease {
  pool: string;
  deploymentId: string;
  leaseId: string;
  /** Window bucket the reservation was booked in, so reconciliation corrects the same bucket. */
  bucket: number;
  /** Tokens reserved. */
  tokens: number;
  /** True when this attempt is the single cluster-wide half-open probe of a deployment whose circuit opened. */
  probe: boolean;
}

export type AcquireResult =
  | { ok: true; lease: Lease }
  | {
      ok: false;
      /** Milliseconds until the soonest deployment could take this request (cooldown end, circuit retry, budget freeing). */
      retryAfterMs: number;
      /** Why nothing was eligible: all cooling down / circuits open, or not enough budget in any window. */
      reason: 'unavailable' | 'no-budget';
    };

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface DeploymentSnapshot {
  id: string;
  inFlight: number;
  tokensInWindow: number;
  requestsInWindow: number;
  /** Epoch ms; 0 when not cooling down. */
  cooldownUntil: number;
  circuit: CircuitState;
  /** Epoch ms until which the circuit stays open; 0 when closed. */
  circuitOpenUntil: number;
}

export interface Store {
  /** Choose a deployment by the pool's strategy among eligible ones of the best tier, and lease it. One round trip. */
  acquire(input: AcquireInput): Promise<AcquireResult>;
  /**
   * End a lease. `chargedTokens` replaces the reservation in the window (the real cost once known);
   * undefined keeps the reservation as it was booked. Idempotent: a second release of the same lease is a no-op.
   */
  release(lease: Lease, chargedTokens?: number): Promise<void>;
  /** Push the deadline of live leases (one round trip per call). Leases already reaped are not revived. */
  renew(leases: readonly Lease[], leaseMs: number): Promise<void>;
  /** Take a deployment out of rotation for every instance for `durationMs`; never shortens a longer cooldown. Returns the until (epoch ms). */
  cooldown(pool: string, deploymentId: string, durationMs: number): Promise<number>;
  /** Publish that a circuit opened: nobody sends there for `durationMs`, then one probe at a time until closed. */
  openCircuit(pool: string, deploymentId: string, durationMs: number): Promise<void>;
  /** Publish that a deployment is healthy again (a probe succeeded). */
  closeCircuit(pool: string, deploymentId: string): Promise<void>;
  /** Live state of every deployment of a pool, for /admin/pools and tests. */
  snapshot(pool: PoolLayout): Promise<DeploymentSnapshot[]>;
  /** True when the store answers (readiness). */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

export interface StoreOptions {
  /** Length of the sliding usage window; 60 000 in production, shorter in tests. Buckets are window/60. */
  windowMs?: number;
  /** Prefix of every key, so tests and tenants can share one Redis. */
  keyPrefix?: string;
}
