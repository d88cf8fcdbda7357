/**
 * Store for a single instance (no REDIS_URL): the same semantics as RedisStore, kept in process.
 * Every method mirrors its Lua script in lua/; the shared test suite holds both to one contract.
 */
import { chooseCandidate } from './choose.ts';
import { HALF_OPEN_MEMORY_MS, IDLE_WINDOWS_BEFORE_EXPIRY, WINDOW_BUCKETS, validWindowMs, wholeMs, wholeTokens } from './constants.ts';
import { SlidingWindow, fitsBudget } from './sliding-window.ts';
import type {
  AcquireInput,
  AcquireResult,
  DeploymentBudget,
  DeploymentSnapshot,
  Lease,
  PoolLayout,
  Store,
  StoreOptions,
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
  /** leaseId → deadline (epoch ms). */
  leases: Map<string, number>;
  window: SlidingWindow;
}

interface PoolState {
  cursor: number;
  cursorExpiresAt: number;
  deployments: Map<string, DeploymentState>;
}

interface Assessment {
  index: number;
  budget: DeploymentBudget;
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

  constructor(options: MemoryStoreOptions = {}) {
    this.#windowMs = validWindowMs(options.windowMs);
    this.#bucketMs = this.#windowMs / WINDOW_BUCKETS;
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
  }

  async acquire(input: AcquireInput): Promise<AcquireResult> {
    const { pool } = input;
    if (pool.deployments.length === 0) return { ok: false, reason: 'unavailable', retryAfterMs: this.#windowMs };
    const nowMs = this.#now();
    const nowBucket = this.#bucketOf(nowMs);
    const tokens = wholeTokens(input.estimatedTokens);
    const excluded = new Set(input.exclude ?? []);
    const assessed = pool.deployments.map((budget, index): Assessment | undefined => {
      const state = this.#deployment(pool.name, budget.id, nowMs);
      const inFlight = reapLeases(state, nowMs);
      if (excluded.has(budget.id)) return undefined;
      let blockedUntil = state.cooldownUntil > nowMs ? state.cooldownUntil : 0;
      let halfOpen = false;
      if (state.openUntil > nowMs) {
        blockedUntil = Math.max(blockedUntil, state.openUntil);
      } else if (state.openUntil > 0) {
        halfOpen = true;
        if (state.probeDeadline > nowMs) blockedUntil = Math.max(blockedUntil, state.probeDeadline);
      }
      const newestBucket = state.window.advance(nowBucket);
      const eligible = blockedUntil === 0 && fitsBudget(tokens, budget.tpm, budget.rpm, state.window.read(newestBucket));
      return { index, budget, state, inFlight, newestBucket, blockedUntil, halfOpen, eligible };
    });
    const considered = assessed.filter((a): a is Assessment => a !== undefined);
    const eligible = considered.filter((a) => a.eligible);
    if (eligible.length === 0) return this.#refusal(considered, nowMs, tokens);

    const bestPriority = Math.min(...eligible.map((a) => a.budget.priority));
    const candidates = eligible.filter((a) => a.budget.priority === bestPriority);
    const chosenIndex = chooseCandidate(
      pool.strategy,
      candidates.map((a) => ({ inFlight: a.inFlight, weight: a.budget.weight })),
      { random1: this.#random(), random2: this.#random(), nextCursor: () => this.#nextCursor(pool.name, nowMs) },
    );
    const chosen = candidates[chosenIndex];
    if (!chosen) throw new Error(`store acquire chose candidate #${chosenIndex} of ${candidates.length}`);

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

  async release(lease: Lease, chargedTokens?: number): Promise<void> {
    const nowMs = this.#now();
    const state = this.#deployment(lease.pool, lease.deploymentId, nowMs);
    if (state.probeLeaseId === lease.leaseId) clearProbe(state);
    // Like ZREM on the leases ZSET: a lease past its deadline but not yet reaped still counts as present.
    const wasPresent = state.leases.delete(lease.leaseId);
    if (wasPresent && chargedTokens !== undefined) {
      const newestBucket = state.window.advance(this.#bucketOf(nowMs));
      state.window.adjust(newestBucket, lease.bucket, wholeTokens(chargedTokens) - lease.tokens);
    }
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

  async cooldown(pool: string, deploymentId: string, durationMs: number): Promise<number> {
    const nowMs = this.#now();
    const state = this.#deployment(pool, deploymentId, nowMs);
    state.cooldownUntil = Math.max(state.cooldownUntil, nowMs + wholeMs(durationMs));
    return state.cooldownUntil;
  }

  async openCircuit(pool: string, deploymentId: string, durationMs: number): Promise<void> {
    const nowMs = this.#now();
    const state = this.#deployment(pool, deploymentId, nowMs);
    clearProbe(state);
    state.openUntil = nowMs + wholeMs(durationMs);
  }

  async closeCircuit(pool: string, deploymentId: string): Promise<void> {
    const state = this.#deployment(pool, deploymentId, this.#now());
    clearProbe(state);
    state.openUntil = 0;
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
      };
    });
  }

  async ping(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {
    this.#pools.clear();
  }

  /** Same rule as the refusal branch of acquire.lua. */
  #refusal(considered: readonly Assessment[], nowMs: number, tokens: number): AcquireResult {
    let reason: 'unavailable' | 'no-budget' = 'unavailable';
    let soonest = Infinity;
    for (const a of considered) {
      if (a.blockedUntil === 0) reason = 'no-budget';
      const wait = a.state.window.waitMs(a.newestBucket, nowMs, this.#bucketMs, tokens, a.budget.tpm, a.budget.rpm);
      if (wait >= 0) soonest = Math.min(soonest, Math.max(a.blockedUntil, nowMs + wait));
    }
    const retryAfterMs = Number.isFinite(soonest) ? soonest - nowMs : this.#windowMs;
    return { ok: false, reason, retryAfterMs: Math.max(1, Math.ceil(retryAfterMs)) };
  }

  #bucketOf(nowMs: number): number {
    return Math.floor(nowMs / this.#bucketMs);
  }

  #pool(name: string): PoolState {
    let pool = this.#pools.get(name);
    if (!pool) {
      pool = { cursor: 0, cursorExpiresAt: 0, deployments: new Map() };
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
        leases: new Map(),
        window: new SlidingWindow(),
      };
      pool.deployments.set(deploymentId, state);
    }
    forgetIdleState(state, nowMs);
    return state;
  }
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

/** What the state hash's TTL does in Redis: once nothing in it matters, it is gone. */
function forgetIdleState(state: DeploymentState, nowMs: number): void {
  const keepUntil = Math.max(
    state.cooldownUntil,
    state.probeDeadline,
    state.openUntil > 0 ? state.openUntil + HALF_OPEN_MEMORY_MS : 0,
  );
  if (keepUntil > nowMs) return;
  state.cooldownUntil = 0;
  state.openUntil = 0;
  clearProbe(state);
}
