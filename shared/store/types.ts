/**
 * The store holds every piece of state that instances share: leases (in-flight requests), token and
 * request usage windows, 429 cooldowns and published circuit state, slow starts, deployments drained by an operator,
 * pools' first-come-first-served wait queues and clients' quota windows. Two implementations keep one contract: RedisStore (atomic Lua
 * scripts, time from Redis TIME) and MemoryStore (one process).
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
  /**
   * Wait in the pool's first-come-first-served queue (pools with maxWaitMs). Expired tickets are reaped
   * first; while another ticket is ahead, nothing is granted (`reason: 'queued'`) and this ticket joins
   * the queue (keeping its place when already in) with its deadline refreshed. At the head, or with the
   * queue empty, the normal choice runs: a grant takes the ticket out of the queue, a refusal puts it in
   * (or keeps it) with its deadline refreshed. A request that no deployment could ever take (estimate above
   * every tpm, every deployment excluded) is never queued: it gets its normal refusal and its ticket leaves.
   * Absent: the queue is ignored entirely (neither consulted nor joined).
   */
  queue?: QueueTicket;
  /**
   * Background work (a Batch API line): admitted last, never at an interactive request's expense. A
   * deployment is eligible only while, after this booking, its tokens and requests in window and its
   * requests in the short window stay within (1 − reserve) of tpm, rpm and ceil(rpm/6) (each floored; a
   * limit that floors to 0 admits nothing); a deployment without budgets only needs to be healthy. Never the
   * half-open probe of a circuit (a half-open deployment is not eligible and, like a drained one, has no retry
   * time of its own). While any live ticket waits in the
   * pool's queue nothing is granted (`queued`, with a poll hint); background requests never join the queue:
   * giving `queue` too throws. Refusals say when the reduced budget would fit (`no-budget` and a window
   * when it never can). Absent: an interactive request, exactly as without this field.
   */
  background?: BackgroundAdmission;
  /**
   * The pool's slow start (ms, at most SLOW_START_MEMORY_MS; 0 or absent: off). A deployment whose slow
   * start began at `s` (DeploymentSnapshot.slowStartSince) has, for s ≤ now < s + slowStartMs, a share of
   * 0.1 + 0.9 × (now − s) / slowStartMs: while the chosen tier has another candidate not in slow start, a
   * slow-starting candidate stays a candidate only with that probability (drawn per deployment per call).
   * A tier whose candidates are all slow-starting keeps them all. Every strategy.
   */
  slowStartMs?: number;
}

export interface BackgroundAdmission {
  /** Share of every budget left to interactive requests, in [0, 0.95]. */
  reserve: number;
}

/** Options of the calls that can start a deployment's slow start. */
export interface SlowStartOption {
  /**
   * reset: the slow start begins now (a passing active probe); without it a reset clears any slow start
   * (full traffic at once). cooldown: it begins at the cooldown's end, whenever this call sets or extends
   * the cooldown (long cooldowns).
   */
  slowStart?: boolean;
}

/** One waiting client request's place in a pool's wait queue. */
export interface QueueTicket {
  /** Unique per waiting client request (a UUID), the same on every poll of it; '' counts as no ticket. */
  ticket: string;
  /**
   * The ticket stays in the queue this long after its latest poll, so a waiter whose instance died or that
   * stopped polling stops blocking the others. Keep it above the interval between polls.
   */
  ttlMs: number;
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
      /**
       * Milliseconds until the soonest deployment could take this request (cooldown end, circuit retry, budget
       * freeing). For `queued`, a poll hint: that same moment, or the next bucket edge when there is room now
       * (which is the head's); at least 1.
       */
      retryAfterMs: number;
      /**
       * Why nothing was granted: all cooling down / circuits open, not enough budget in any window, or (only
       * with `queue`) another ticket is ahead of this one in the pool's wait queue.
       */
      reason: 'unavailable' | 'no-budget' | 'queued';
    };

/**
 * What a deployment's response said about its own rate-limit counters (Azure's x-ratelimit-* headers).
 * Usage is raised to match it where ours is lower; an observation never lowers usage.
 */
export interface WindowObservation {
  /** The deployment's budgets (the store does not keep them). */
  tpm?: number;
  rpm?: number;
  /** From x-ratelimit-remaining-tokens: tokens left in the deployment's own sliding window. */
  remainingTokens?: number;
  /** From x-ratelimit-remaining-requests: requests left in its short window (Azure's 10 s window, limit ceil(rpm/6)). */
  remainingRequests?: number;
}

/** A client's request to book into its own quota window (per client, across all pools). */
export interface QuotaInput {
  /** The client (its configured name). */
  subject: string;
  /** Tokens per sliding window. Absent: not limited. */
  tpm?: number;
  /** Requests per sliding window (no short window for clients). Absent: not limited. */
  rpm?: number;
  /** Tokens booked now (0 when unknown). */
  estimatedTokens: number;
}

/** A granted quota booking. There is no in-flight tracking: hand it to `releaseQuota` once, or never. */
export interface QuotaLease {
  subject: string;
  /** Window bucket the estimate was booked in. */
  bucket: number;
  /** Tokens booked. */
  tokens: number;
}

export type QuotaResult =
  | {
      ok: true;
      lease: QuotaLease;
      /** Left in the window after this booking (0 at least); absent when that budget is unlimited. */
      remainingTokens?: number;
      remainingRequests?: number;
    }
  | {
      ok: false;
      /** The budget that does not fit; `tokens` when both do not. */
      reason: 'tokens' | 'requests';
      /** Milliseconds until enough bookings leave the window for this request to fit; a window when it never can. */
      retryAfterMs: number;
      /** Left in the window now (0 at least); absent when that budget is unlimited. */
      remainingTokens?: number;
      remainingRequests?: number;
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
  /** Taken out of rotation by hand (`drain`) until `enable`; cooldown and circuit are reported as they are. */
  drained: boolean;
  /** Epoch ms of the latest manual `reset` (remembered a day, RESET_MEMORY_MS); 0 when none. */
  resetAt: number;
  /**
   * Epoch ms the deployment's latest slow start began (in the future while a cooldown it follows runs); 0
   * when none is remembered (SLOW_START_MEMORY_MS after it began). It is ramping while now < slowStartSince
   * + the pool's slowStartMs.
   */
  slowStartSince: number;
}

/**
 * No work from the past. A call that rejected because its client gave up on it (a Redis command
 * timeout) may still reach the store afterwards; a call that books something changes nothing when it
 * arrives after the moment its client gave up: acquire (no lease, no reservation, no queue place; background acquires alike),
 * acquireQuota (no booking), renew (no lease pushed) and the observation of release / observe
 * (RedisStore: once it has measured its offset to the Redis clock, a few ms after connecting). What is
 * right whenever it runs may still take effect late: release ending its lease and applying its charge,
 * releaseQuota, leaveQueue, cooldown, openCircuit, closeCircuit, drain, enable, reset. A call that reaches the store past the
 * moment its client gives up may also reject for that reason (RedisStore: LateCallError); treat it like
 * a timeout, not a refusal. MemoryStore has no network: each of its calls takes effect when made.
 */
export interface Store {
  /** Choose a deployment by the pool's strategy among eligible ones of the best tier, and lease it. One round trip. */
  acquire(input: AcquireInput): Promise<AcquireResult>;
  /**
   * End a lease. `chargedTokens` replaces the reservation in the window (the real cost once known);
   * undefined keeps the reservation as it was booked. Idempotent: a second release of the same lease is a no-op.
   * `observed` (the deployment's rate-limit headers) is applied afterwards, even when the lease was already
   * gone: with tpm and remainingTokens, the token deficit (tpm − remainingTokens) − tokens in our window is
   * booked into the current bucket; with rpm and remainingRequests, the request deficit
   * (ceil(rpm/6) − remainingRequests) − requests in our short window is booked there as requests (which
   * also counts in the window). Only deficits above 0 are booked: an observation never lowers usage.
   * Same round trip.
   */
  release(lease: Lease, chargedTokens?: number, observed?: WindowObservation): Promise<void>;
  /**
   * End a lease whose request never left (its client was refused by its own quota meanwhile): its
   * booking leaves the window whole, tokens and the request, as if never made. Idempotent, like release,
   * and a no-op after it. Same round trip.
   */
  withdraw(lease: Lease): Promise<void>;
  /**
   * Apply what a deployment's headers said about its own window, at the moment they arrived (applying it
   * later, at release, would count again what left the window in between).
   */
  observe(pool: string, deploymentId: string, observed: WindowObservation): Promise<void>;
  /**
   * Push the deadline of live leases. Leases already reaped are not revived. RedisStore sends one script per
   * pool per RENEW_BATCH leases, one after the other, so a large renewal never holds Redis in one long call.
   */
  renew(leases: readonly Lease[], leaseMs: number): Promise<void>;
  /**
   * Take a deployment out of rotation for every instance for `durationMs`; never shortens a longer cooldown.
   * Returns the until (epoch ms). With `slowStart` (long cooldowns), and whenever a slow start is pending
   * (begins in the future), a call that sets or extends the cooldown makes the slow start begin at its end.
   */
  cooldown(pool: string, deploymentId: string, durationMs: number, options?: SlowStartOption): Promise<number>;
  /** Publish that a circuit opened: nobody sends there for `durationMs`, then one probe at a time until closed. */
  openCircuit(pool: string, deploymentId: string, durationMs: number): Promise<void>;
  /**
   * Publish that a deployment is healthy again (a probe succeeded). When the circuit was open or half-open,
   * its slow start begins now (a circuit already closed keeps its slow start as it is).
   */
  closeCircuit(pool: string, deploymentId: string): Promise<void>;
  /**
   * Take a deployment out of rotation by hand, for every instance, until `enable`: acquire never grants it
   * (no probe either) and treats it as excluded, so it has no retry time of its own (a pool drained entirely
   * is refused as unavailable, a window, and never queued). Leases in flight on it end, renew and release as
   * usual. Cooldown and circuit are kept. No expiry. Idempotent: true when it was in rotation, false when
   * drained already.
   */
  drain(pool: string, deploymentId: string): Promise<boolean>;
  /** Undo `drain`; cooldown and circuit then apply as they are. Idempotent: true when it was drained. */
  enable(pool: string, deploymentId: string): Promise<boolean>;
  /**
   * Clear a deployment's health by hand, for every instance: its cooldown ends, its circuit closes (a half-open
   * probe marker is forgotten) and `resetAt` is set, so instances forget the ejections they counted before it.
   * Drained stays as it is. With `slowStart` (an active probe passed) its slow start begins now; without it
   * (an operator) any slow start ends: full traffic at once. Idempotent.
   */
  reset(pool: string, deploymentId: string, options?: SlowStartOption): Promise<void>;
  /** Take a waiter's ticket out of a pool's wait queue (it gave up: timeout, client gone). No-op when absent. */
  leaveQueue(pool: string, ticket: string): Promise<void>;
  /**
   * Book a request into its client's quota window when it fits: tokens against tpm and requests against rpm,
   * both over the sliding window. An estimate above tpm never fits (retry after a window). One round trip.
   */
  acquireQuota(input: QuotaInput): Promise<QuotaResult>;
  /**
   * Replace the booked estimate by the real charge in the bucket it was booked in (while that bucket is in the
   * window), never below zero. No-op when `chargedTokens` is undefined. Not idempotent: call it once per lease.
   */
  releaseQuota(lease: QuotaLease, chargedTokens?: number): Promise<void>;
  /** Live state of every deployment of a pool, for /admin/pools and tests. */
  snapshot(pool: PoolLayout): Promise<DeploymentSnapshot[]>;
  /** True when the store answers (readiness). */
  ping(): Promise<boolean>;
  /**
   * False while the store knows it cannot answer (a Redis client reconnecting), so callers need not wait
   * for a call to time out; true otherwise, also when a frozen server has not said so yet. Optional.
   */
  connected?(): boolean;
  close(): Promise<void>;
}

export interface StoreOptions {
  /** Length of the sliding usage window; 60 000 in production, shorter in tests. Buckets are window/60. */
  windowMs?: number;
  /** Prefix of every key, so tests and tenants can share one Redis. */
  keyPrefix?: string;
}
