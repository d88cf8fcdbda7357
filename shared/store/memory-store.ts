/**
 * Store for a single instance (no REDIS_URL): the same semantics as RedisStore, kept in process.
 * Every method mirrors its Lua script in lua/; the shared test suite holds both to one contract.
 * Without a network no call can arrive after its caller gave up, so there are no deadlines to check
 * (the scripts' late refusals, types.ts): every call takes effect when made.
 */
import { backgroundLimits, backgroundShare, interactiveLimits, type AdmissionLimits } from './background.ts';
import { chooseCandidate } from './choose.ts';
import {
  HALF_OPEN_MEMORY_MS,
  IDLE_WINDOWS_BEFORE_EXPIRY,
  RESET_MEMORY_MS,
  SLOW_START_MEMORY_MS,
  WINDOW_BUCKETS,
  observationLease,
  observedCounts,
  validWindowMs,
  wholeMs,
  wholeTokens,
} from './constants.ts';
import { SlidingWindow, fitsBudget } from './sliding-window.ts';
import { keepSlowStarting, rememberedSlowStart, slowStartLength, slowStartShare } from './slow-start.ts';
import type {
  AcquireInput,
  AcquireResult,
  DeploymentBudget,
  DeploymentSnapshot,
  Lease,
  PoolLayout,
  QuotaInput,
  QuotaLease,
  QuotaResult,
  SlowStartOption,
  Store,
  StoreOptions,
  WindowObservation,
} from './types.ts';

export interface MemoryStoreOptions extends StoreOptions {
  /** Clock in epoch ms; tests may inject one. Default Date.now. */
  now?: () => number;
  /** Random numbers in [0, 1); tests may inject them. Default Math.random. */
  random?: () => number;
}

interface DeploymentState {
  cooldownUntil: number;
  /** 0 when the circuit is closed. */
  openUntil: number;
  probeLeaseId: string | undefined;
  probeDeadline: number;
  /** Taken out of rotation by hand until enabled. */
  drained: boolean;
  /** Epoch ms of the latest manual reset; 0 when none is remembered. */
  resetAt: number;
  /** Epoch ms the latest slow start began (in the future while the cooldown it follows runs); 0 when none. */
  slowStartSince: number;
  /** leaseId → deadline (epoch ms). */
  leases: Map<string, number>;
  window: SlidingWindow;
}

interface PoolState {
  cursor: number;
  cursorExpiresAt: number;
  deployments: Map<string, DeploymentState>;
  /** Wait queue: ticket → deadline (epoch ms), in first-enqueue order (a Map keeps insertion order on update). */
  queue: Map<string, number>;
}

interface Assessment {
  index: number;
  budget: DeploymentBudget;
  /** The budgets as checked: cut for background work. */
  limits: AdmissionLimits;
  state: DeploymentState;
  inFlight: number;
  newestBucket: number;
  blockedUntil: number;
  halfOpen: boolean;
  eligible: boolean;
}

export class MemoryStore implements Store {
  readonly #windowMs: number;
  readonly #bucketMs: number;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #pools = new Map<string, PoolState>();
  /** Clients' quota windows. */
  readonly #clients = new Map<string, SlidingWindow>();

  constructor(options: MemoryStoreOptions = {}) {
    this.#windowMs = validWindowMs(options.windowMs);
    this.#bucketMs = this.#windowMs / WINDOW_BUCKETS;
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
  }

  async acquire(input: AcquireInput): Promise<AcquireResult> {
    const { pool } = input;
    if (input.background && input.queue) throw new Error('store acquire: background work never waits in the queue (background with queue)');
    if (pool.deployments.length === 0) return { ok: false, reason: 'unavailable', retryAfterMs: this.#windowMs };
    const nowMs = this.#now();
    const nowBucket = this.#bucketOf(nowMs);
    const tokens = wholeTokens(input.estimatedTokens);
    const excluded = new Set(input.exclude ?? []);
    // An empty ticket is no ticket, as in acquire.lua.
    const ticket = input.queue && input.queue.ticket !== '' ? input.queue.ticket : undefined;
    const queue = this.#pool(pool.name).queue;
    const share = input.background ? backgroundShare(input.background) : undefined;
    // Another live ticket is ahead of this one: nothing is granted to it now. Background work comes after
    // every live ticket (it reads the queue and never joins it).
    let behind = false;
    if (ticket !== undefined) {
      reapQueue(queue, nowMs);
      const head = queue.keys().next();
      behind = !head.done && head.value !== ticket;
    } else if (share !== undefined) {
      behind = [...queue.values()].some((deadline) => deadline > nowMs);
    }
    const ticketDeadline = nowMs + Math.max(1, wholeMs(input.queue?.ttlMs ?? 0));
    const assessed = pool.deployments.map((budget, index): Assessment | undefined => {
      const state = this.#deployment(pool.name, budget.id, nowMs);
      const inFlight = reapLeases(state, nowMs);
      // Drained: as if excluded (no retry time of its own, no probe), like acquire.lua.
      if (excluded.has(budget.id) || state.drained) return undefined;
      let blockedUntil = state.cooldownUntil > nowMs ? state.cooldownUntil : 0;
      let halfOpen = false;
      if (state.openUntil > nowMs) {
        blockedUntil = Math.max(blockedUntil, state.openUntil);
      } else if (state.openUntil > 0) {
        halfOpen = true;
        if (state.probeDeadline > nowMs) blockedUntil = Math.max(blockedUntil, state.probeDeadline);
      }
      // Background work is never the probe: a half-open deployment is out for it, with no retry time of its own.
      if (share !== undefined && halfOpen) return undefined;
      const limits = share === undefined ? interactiveLimits(budget) : backgroundLimits(budget, share);
      const newestBucket = state.window.advance(nowBucket);
      const eligible =
        blockedUntil === 0 &&
        !limits.never &&
        fitsBudget(tokens, limits.tpm, limits.rpm, state.window.read(newestBucket), true, limits.shortLimit);
      return { index, budget, limits, state, inFlight, newestBucket, blockedUntil, halfOpen, eligible };
    });
    const considered = assessed.filter((a): a is Assessment => a !== undefined);
    const eligible = considered.filter((a) => a.eligible);
    if (behind || eligible.length === 0) {
      // Nothing is granted now: tell the caller the soonest moment any deployment could take it.
      const { reason, soonest } = this.#soonestRoom(considered, nowMs, tokens);
      if (soonest === undefined) {
        // Never servable: waiting would only block the others.
        if (ticket !== undefined) queue.delete(ticket);
        return { ok: false, reason, retryAfterMs: this.#windowMs };
      }
      if (ticket !== undefined) queue.set(ticket, ticketDeadline);
      let wait = soonest - nowMs;
      if (!behind) return { ok: false, reason, retryAfterMs: Math.max(1, Math.ceil(wait)) };
      // Room now is the head's; more frees at a bucket edge at the earliest (or when a charge comes in lower).
      if (wait <= 0) wait = (nowBucket + 1) * this.#bucketMs - nowMs;
      return { ok: false, reason: 'queued', retryAfterMs: Math.max(1, Math.ceil(wait)) };
    }

    const bestPriority = Math.min(...eligible.map((a) => a.budget.priority));
    const slowStartMs = slowStartLength(input.slowStartMs);
    const candidates = keepSlowStarting(
      eligible.filter((a) => a.budget.priority === bestPriority),
      (a) => slowStartShare(a.state.slowStartSince, nowMs, slowStartMs),
      this.#random,
    );
    const chosenIndex = chooseCandidate(
      pool.strategy,
      candidates.map((a) => ({ inFlight: a.inFlight, weight: a.budget.weight })),
      { random1: this.#random(), random2: this.#random(), nextCursor: () => this.#nextCursor(pool.name, nowMs) },
    );
    const chosen = candidates[chosenIndex];
    if (!chosen) throw new Error(`store acquire chose candidate #${chosenIndex} of ${candidates.length}`);

    if (ticket !== undefined) queue.delete(ticket);
    const deadline = nowMs + Math.max(1, wholeMs(input.leaseMs));
    chosen.state.leases.set(input.leaseId, deadline);
    chosen.state.window.book(chosen.newestBucket, tokens);
    if (chosen.halfOpen) {
      chosen.state.probeLeaseId = input.leaseId;
      chosen.state.probeDeadline = deadline;
    }
    return {
      ok: true,
      lease: {
        pool: pool.name,
        deploymentId: chosen.budget.id,
        leaseId: input.leaseId,
        bucket: chosen.newestBucket,
        tokens,
        probe: chosen.halfOpen,
      },
    };
  }

  async release(lease: Lease, chargedTokens?: number, observed?: WindowObservation): Promise<void> {
    const nowMs = this.#now();
    const nowBucket = this.#bucketOf(nowMs);
    const state = this.#deployment(lease.pool, lease.deploymentId, nowMs);
    if (state.probeLeaseId === lease.leaseId) clearProbe(state);
    // Like ZREM on the leases ZSET: a lease past its deadline but not yet reaped still counts as present.
    const wasPresent = state.leases.delete(lease.leaseId);
    if (wasPresent && chargedTokens !== undefined) {
      const newestBucket = state.window.advance(nowBucket);
      state.window.adjust(newestBucket, lease.bucket, wholeTokens(chargedTokens) - lease.tokens);
    }

    // What the deployment reported, lease live or not: book where it used more than our window holds.
    const { usedTokens, usedRequests } = observedCounts(observed);
    if (usedTokens === undefined && usedRequests === undefined) return;
    const newestBucket = state.window.advance(nowBucket);
    const counts = state.window.read(newestBucket);
    const tokenDeficit = usedTokens === undefined ? 0 : Math.max(0, usedTokens - counts.tokens);
    const requestDeficit = usedRequests === undefined ? 0 : Math.max(0, usedRequests - counts.shortRequests);
    // Tokens leave as Azure's window slides (spread over it); requests count in the short window.
    state.window.spread(newestBucket, tokenDeficit);
    if (requestDeficit > 0) state.window.add(newestBucket, 0, requestDeficit);
  }

  async withdraw(lease: Lease): Promise<void> {
    const nowMs = this.#now();
    const state = this.#deployment(lease.pool, lease.deploymentId, nowMs);
    if (state.probeLeaseId === lease.leaseId) clearProbe(state);
    if (!state.leases.delete(lease.leaseId)) return;
    const newestBucket = state.window.advance(this.#bucketOf(nowMs));
    state.window.adjust(newestBucket, lease.bucket, -lease.tokens);
    state.window.withdrawRequest(newestBucket, lease.bucket);
  }

  async observe(pool: string, deploymentId: string, observed: WindowObservation): Promise<void> {
    await this.release(observationLease(pool, deploymentId), undefined, observed);
  }

  async leaveQueue(pool: string, ticket: string): Promise<void> {
    this.#pools.get(pool)?.queue.delete(ticket);
  }

  async acquireQuota(input: QuotaInput): Promise<QuotaResult> {
    const nowMs = this.#now();
    const tokens = wholeTokens(input.estimatedTokens);
    const { tpm, rpm } = input;
    let window = this.#clients.get(input.subject);
    if (!window) {
      window = new SlidingWindow();
      this.#clients.set(input.subject, window);
    }
    const newestBucket = window.advance(this.#bucketOf(nowMs));
    const counts = window.read(newestBucket);
    if (fitsBudget(tokens, tpm, rpm, counts, false)) {
      window.book(newestBucket, tokens);
      return {
        ok: true,
        lease: { subject: input.subject, bucket: newestBucket, tokens },
        ...remainingFigures(tpm, counts.tokens + tokens, rpm, counts.requests + 1),
      };
    }
    const reason = tpm !== undefined && counts.tokens + tokens > tpm ? 'tokens' : 'requests';
    const wait = window.waitMs(newestBucket, nowMs, this.#bucketMs, tokens, tpm, rpm, false);
    return {
      ok: false,
      reason,
      retryAfterMs: wait < 0 ? this.#windowMs : Math.max(1, Math.ceil(wait)),
      ...remainingFigures(tpm, counts.tokens, rpm, counts.requests),
    };
  }

  async releaseQuota(lease: QuotaLease, chargedTokens?: number): Promise<void> {
    // Nothing to correct when the estimate was the cost (a round trip saved, in Redis's case).
    if (chargedTokens === undefined || wholeTokens(chargedTokens) === lease.tokens) return;
    const window = this.#clients.get(lease.subject);
    if (!window) return;
    const newestBucket = window.advance(this.#bucketOf(this.#now()));
    window.adjust(newestBucket, lease.bucket, wholeTokens(chargedTokens) - lease.tokens);
  }

  async renew(leases: readonly Lease[], leaseMs: number): Promise<void> {
    const nowMs = this.#now();
    const deadline = nowMs + Math.max(1, wholeMs(leaseMs));
    for (const lease of leases) {
      const state = this.#deployment(lease.pool, lease.deploymentId, nowMs);
      reapLeases(state, nowMs);
      const current = state.leases.get(lease.leaseId);
      if (current === undefined) continue;
      if (current < deadline) state.leases.set(lease.leaseId, deadline);
      if (state.probeLeaseId === lease.leaseId && state.probeDeadline < deadline) state.probeDeadline = deadline;
    }
  }

  async cooldown(pool: string, deploymentId: string, durationMs: number, options?: SlowStartOption): Promise<number> {
    const nowMs = this.#now();
    const state = this.#deployment(pool, deploymentId, nowMs);
    const untilMs = Math.max(state.cooldownUntil, nowMs + wholeMs(durationMs));
    // Set or extended: a slow start asked for, or one pending already, begins at the new end.
    if (untilMs > state.cooldownUntil && (options?.slowStart === true || state.slowStartSince > nowMs)) state.slowStartSince = untilMs;
    state.cooldownUntil = untilMs;
    return untilMs;
  }

  async openCircuit(pool: string, deploymentId: string, durationMs: number): Promise<void> {
    const nowMs = this.#now();
    const state = this.#deployment(pool, deploymentId, nowMs);
    clearProbe(state);
    state.openUntil = nowMs + wholeMs(durationMs);
  }

  async closeCircuit(pool: string, deploymentId: string): Promise<void> {
    const nowMs = this.#now();
    const state = this.#deployment(pool, deploymentId, nowMs);
    // Back from an open or half-open circuit: by slow start, from now.
    if (state.openUntil > 0) state.slowStartSince = nowMs;
    clearProbe(state);
    state.openUntil = 0;
  }

  async drain(pool: string, deploymentId: string): Promise<boolean> {
    const state = this.#deployment(pool, deploymentId, this.#now());
    if (state.drained) return false;
    state.drained = true;
    return true;
  }

  async enable(pool: string, deploymentId: string): Promise<boolean> {
    const state = this.#deployment(pool, deploymentId, this.#now());
    if (!state.drained) return false;
    state.drained = false;
    return true;
  }

  async reset(pool: string, deploymentId: string, options?: SlowStartOption): Promise<void> {
    const nowMs = this.#now();
    const state = this.#deployment(pool, deploymentId, nowMs);
    state.cooldownUntil = 0;
    state.openUntil = 0;
    clearProbe(state);
    state.resetAt = nowMs;
    // A passing active probe: back by slow start; an operator's reset: full traffic at once.
    state.slowStartSince = options?.slowStart === true ? nowMs : 0;
  }

  async snapshot(pool: PoolLayout): Promise<DeploymentSnapshot[]> {
    const nowMs = this.#now();
    const nowBucket = this.#bucketOf(nowMs);
    return pool.deployments.map(({ id }) => {
      const state = this.#deployment(pool.name, id, nowMs);
      const counts = state.window.read(state.window.advance(nowBucket));
      const circuit = state.openUntil > nowMs ? 'open' : state.openUntil > 0 ? 'half-open' : 'closed';
      return {
        id,
        inFlight: reapLeases(state, nowMs),
        tokensInWindow: counts.tokens,
        requestsInWindow: counts.requests,
        cooldownUntil: state.cooldownUntil > nowMs ? state.cooldownUntil : 0,
        circuit,
        circuitOpenUntil: state.openUntil,
        drained: state.drained,
        resetAt: state.resetAt,
        slowStartSince: rememberedSlowStart(state.slowStartSince, nowMs),
      };
    });
  }

  async ping(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {
    this.#pools.clear();
    this.#clients.clear();
  }

  /**
   * Same rule as soonestRoom in acquire.lua: the soonest moment (epoch ms) any deployment considered could
   * take the request if nothing else were booked meanwhile (nowMs when one can now; undefined when none
   * ever can), and why none can now when none can.
   */
  #soonestRoom(
    considered: readonly Assessment[],
    nowMs: number,
    tokens: number,
  ): { reason: 'unavailable' | 'no-budget'; soonest: number | undefined } {
    let reason: 'unavailable' | 'no-budget' = 'unavailable';
    let soonest = Infinity;
    for (const a of considered) {
      if (a.blockedUntil === 0) reason = 'no-budget';
      const { limits } = a;
      const wait = limits.never
        ? -1
        : a.state.window.waitMs(a.newestBucket, nowMs, this.#bucketMs, tokens, limits.tpm, limits.rpm, true, limits.shortLimit);
      if (wait >= 0) soonest = Math.min(soonest, Math.max(a.blockedUntil, nowMs + wait));
    }
    return { reason, soonest: Number.isFinite(soonest) ? soonest : undefined };
  }

  #bucketOf(nowMs: number): number {
    return Math.floor(nowMs / this.#bucketMs);
  }

  #pool(name: string): PoolState {
    let pool = this.#pools.get(name);
    if (!pool) {
      pool = { cursor: 0, cursorExpiresAt: 0, deployments: new Map(), queue: new Map() };
      this.#pools.set(name, pool);
    }
    return pool;
  }

  /** The round-robin cursor expires after idle windows, like its Redis key. */
  #nextCursor(poolName: string, nowMs: number): number {
    const pool = this.#pool(poolName);
    if (nowMs >= pool.cursorExpiresAt) pool.cursor = 0;
    pool.cursor += 1;
    pool.cursorExpiresAt = nowMs + IDLE_WINDOWS_BEFORE_EXPIRY * this.#windowMs;
    return pool.cursor;
  }

  #deployment(poolName: string, deploymentId: string, nowMs: number): DeploymentState {
    const pool = this.#pool(poolName);
    let state = pool.deployments.get(deploymentId);
    if (!state) {
      state = {
        cooldownUntil: 0,
        openUntil: 0,
        probeLeaseId: undefined,
        probeDeadline: 0,
        drained: false,
        resetAt: 0,
        slowStartSince: 0,
        leases: new Map(),
        window: new SlidingWindow(),
      };
      pool.deployments.set(deploymentId, state);
    }
    forgetIdleState(state, nowMs);
    return state;
  }
}

/** Drops waiters whose deadline has come (they stopped polling). */
function reapQueue(queue: Map<string, number>, nowMs: number): void {
  for (const [ticket, deadline] of queue) {
    if (deadline <= nowMs) queue.delete(ticket);
  }
}

/** A quota's remaining figures (0 at least), left out where the budget is unlimited. */
function remainingFigures(
  tpm: number | undefined,
  tokens: number,
  rpm: number | undefined,
  requests: number,
): { remainingTokens?: number; remainingRequests?: number } {
  const figures: { remainingTokens?: number; remainingRequests?: number } = {};
  if (tpm !== undefined) figures.remainingTokens = Math.max(0, tpm - tokens);
  if (rpm !== undefined) figures.remainingRequests = Math.max(0, rpm - requests);
  return figures;
}

/** Live leases after dropping those whose deadline has come. */
function reapLeases(state: DeploymentState, nowMs: number): number {
  for (const [leaseId, deadline] of state.leases) {
    if (deadline <= nowMs) state.leases.delete(leaseId);
  }
  return state.leases.size;
}

function clearProbe(state: DeploymentState): void {
  state.probeLeaseId = undefined;
  state.probeDeadline = 0;
}

/** What the state hash's TTL does in Redis: once nothing in it matters, it is gone; never while drained (no TTL). */
function forgetIdleState(state: DeploymentState, nowMs: number): void {
  if (state.drained) return;
  const keepUntil = Math.max(
    state.cooldownUntil,
    state.probeDeadline,
    state.openUntil > 0 ? state.openUntil + HALF_OPEN_MEMORY_MS : 0,
    state.resetAt > 0 ? state.resetAt + RESET_MEMORY_MS : 0,
    state.slowStartSince > 0 ? state.slowStartSince + SLOW_START_MEMORY_MS : 0,
  );
  if (keepUntil > nowMs) return;
  state.cooldownUntil = 0;
  state.openUntil = 0;
  state.resetAt = 0;
  state.slowStartSince = 0;
  clearProbe(state);
}
