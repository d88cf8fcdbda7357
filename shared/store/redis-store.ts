/**
 * Store on Redis: every decision is one Lua script (one round trip), atomic across all gateway
 * instances, with time taken from the Redis server so skewed instance clocks agree. Key layout in
 * keys.ts, scripts with their KEYS/ARGV in lua/.
 */
import { Redis, type Cluster, type RedisOptions } from 'ioredis';
import { backgroundShare } from './background.ts';
import { DEFAULT_KEY_PREFIX, RENEW_BATCH, observationLease, observedCounts, validWindowMs, wholeMs, wholeTokens } from './constants.ts';
import { KeyLayout, type DeploymentKeys } from './keys.ts';
import { luaScripts, SCRIPT_NAMES, type ScriptName } from './lua-scripts.ts';
import { slowStartLength } from './slow-start.ts';
import type {
  AcquireInput,
  AcquireResult,
  CircuitState,
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

type ScriptArg = string | number;
type ScriptCommand = (numberOfKeys: number, ...keysThenArgs: ScriptArg[]) => Promise<unknown>;
type ScriptCommands = Record<string, ScriptCommand>;

/**
 * Client settings for a client the store creates: a command fails fast while Redis is away instead of
 * queueing forever, so the gateway answers 503 rather than hanging; reconnects keep trying meanwhile.
 */
export const STORE_REDIS_OPTIONS: RedisOptions = {
  // The store batches its writes itself, cheaper (RedisStore's #oneWritePerTick).
  enableAutoPipelining: false,
  maxRetriesPerRequest: 1,
  // A script takes well under a millisecond; 1 s leaves room for an event loop stalled by a GC or a
  // tokenizer build without tripping, and bounds what the requests in flight when Redis freezes pay
  // before the gateway's store circuit (gateway/routing/live-store.ts) sends everything to the fallback.
  commandTimeout: 1000,
  connectTimeout: 1000,
  retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 500),
};

/** How long ping waits before reporting the store as not answering. */
const PING_TIMEOUT_MS = 1000;

/*
 * No work from the past. ioredis gives up on a command after its `commandTimeout` and rejects the
 * promise, but the command has been written (or waits in the offline queue) and Redis runs it when it
 * gets to it: after a freeze (SIGSTOP, a stalled network, a long fork) every acquire that had timed out
 * would still book a lease and a reservation that nobody holds. So every call whose late effect would be
 * wrong carries the moment its client gives up on it, in Redis's clock, and its script compares that
 * with TIME and changes nothing past it (includes/time.lua pastDeadline):
 *   acquire        lease, reservation, queue place, round-robin step
 *   acquire-quota  the client's booking
 *   renew          would keep a lease alive from the late moment on, even one whose holder ended or
 *                  died meanwhile; a live holder renews again on its next round
 *   release        only its observation (also observe's): figures read then and applied later would
 *                  count again what left the window in between
 * Not checked, because their effect is right whenever it happens: release's end of the lease and its
 * charge (the lease would only count until it expired anyway), release-quota (the charge, into the bucket
 * booked), leave-queue, snapshot (reads), and cooldown / open-circuit / close-circuit: what a deployment
 * said is still true and every instance should hear it; Redis runs commands in the order they were sent,
 * so a late one overrides nothing sent after it, and a late cooldown only ends later by the delay. The
 * same holds for an operator's drain / enable / reset (idempotent; gateway/routing/live-store.ts replays
 * one it could not confirm).
 *
 * The deadline is this instance's clock at the call plus the client's commandTimeout (read from the
 * client's options), moved into Redis's clock by an estimate of the offset between the two, from TIME
 * round trips: on every (re)connect, on every ping, and with a call when the estimate is older than
 * CLOCK_SAMPLE_INTERVAL_MS. A sample whose round trip took longer than CLOCK_SAMPLE_MAX_RTT_MS is
 * dropped (the estimate is off by at most half the round trip); the estimate outlives reconnects, so
 * calls queued while disconnected are still checked. With no estimate yet, or no commandTimeout
 * (ioredis then never gives up), calls carry '' and are not checked.
 * A late script answers with a code of its own and the call rejects with LateCallError, like a timeout:
 * the caller has nearly always given up already (ioredis drops the reply), and one still waiting (an
 * EVAL resent after NOSCRIPT, an estimate a few ms off) must take it as the store not answering, not as
 * a refusal (a false 429).
 */

/** How old the clock offset estimate may get before a call refreshes it (besides (re)connects and pings). */
const CLOCK_SAMPLE_INTERVAL_MS = 10_000;
/** A TIME round trip longer than this says little about the offset (half of it is the uncertainty). */
const CLOCK_SAMPLE_MAX_RTT_MS = 50;
/** The late codes of the scripts that check a deadline: acquire's reason 4, acquire-quota's reason 3, renew's -1. */
const LATE_ACQUIRE = 4;
const LATE_QUOTA = 3;

/** A call that reached Redis after its deadline (its client had given up on it): the script changed nothing. */
export class LateCallError extends Error {
  constructor(script: ScriptName) {
    super(`store ${script} reached Redis after its deadline (the client had given up on it): nothing was done`);
    this.name = 'LateCallError';
  }
}

export interface RedisStoreOptions extends StoreOptions {
  /**
   * This instance's clock in epoch ms; tests inject a skewed one. Default: a monotonic clock
   * (performance.timeOrigin + performance.now()), like the timers ioredis times commands out with, so a
   * wall-clock step on the instance does not move deadlines.
   */
  now?: () => number;
  /** False sends no deadlines (every call is carried out however late): only for tests that show why. */
  checkDeadlines?: boolean;
  /** A given client is the caller's to close, unless this is true (a client made for this store alone). */
  closeClient?: boolean;
}

/** A pool's keys in acquire's order (cursor, queue, in-flight, state index, then 3 per deployment), built once per layout. */
interface PoolKeys {
  name: string;
  deployments: PoolLayout['deployments'];
  keys: readonly string[];
  ids: readonly string[];
}

/** The leases of one deployment that one renew call carries: probe leases first. */
interface RenewGroup {
  keys: DeploymentKeys;
  probes: string[];
  others: string[];
}

function monotonicNow(): number {
  return performance.timeOrigin + performance.now();
}

const REASONS = { 1: 'unavailable', 2: 'no-budget', 3: 'queued' } as const;
const QUOTA_REASONS = { 1: 'tokens', 2: 'requests' } as const;
const CIRCUITS: Record<number, CircuitState> = { 0: 'closed', 1: 'open', 2: 'half-open' };
const SNAPSHOT_FIELDS = 9;

/** Command names are namespaced because a caller's client may define commands of its own. Built once: #run asks per call. */
const COMMAND_NAMES = new Map<ScriptName, string>(SCRIPT_NAMES.map((script) => [script, `spillway_${script.replaceAll('-', '_')}`]));

function commandName(script: ScriptName): string {
  return COMMAND_NAMES.get(script)!;
}

function numbers(reply: unknown): number[] {
  if (!Array.isArray(reply)) throw new Error(`store script returned ${typeof reply}, expected an array`);
  return reply.map(Number);
}

/** A slow-start flag as a script argument. */
function slowStartArg(options: SlowStartOption | undefined): ScriptArg {
  return options?.slowStart ? 1 : '';
}

/** A budget as a script argument: '' when unlimited. */
function budgetArg(budget: number | undefined): ScriptArg {
  return budget ?? '';
}

/** Remaining figures of acquire-quota.lua: -1 means unlimited, which the result leaves out. */
function remainingFigures(
  tokens: number | undefined,
  requests: number | undefined,
): { remainingTokens?: number; remainingRequests?: number } {
  const figures: { remainingTokens?: number; remainingRequests?: number } = {};
  if (tokens !== undefined && tokens >= 0) figures.remainingTokens = tokens;
  if (requests !== undefined && requests >= 0) figures.remainingRequests = requests;
  return figures;
}

/** Keys of acquire before the deployments' (cursor, queue order, queue deadlines, in-flight, state index). */
const POOL_KEYS = 5;

/** Whether a remembered layout still has the same deployment ids in the same order (a layout edited in place). */
function sameIds(known: PoolKeys, pool: PoolLayout): boolean {
  const { deployments } = pool;
  if (deployments.length !== known.ids.length) return false;
  for (let i = 0; i < deployments.length; i++) if (deployments[i]?.id !== known.ids[i]) return false;
  return true;
}

/**
 * One pool's deployment groups cut into calls of at most RENEW_BATCH leases (a large deployment's
 * leases are split over several calls; probes stay in the part that comes first).
 */
function* renewBatches(groups: Map<string, RenewGroup>): Generator<RenewGroup[]> {
  let batch: RenewGroup[] = [];
  let size = 0;
  for (const group of groups.values()) {
    const ids = [...group.probes, ...group.others];
    let probes = group.probes.length;
    for (let start = 0; start < ids.length;) {
      const take = Math.min(RENEW_BATCH - size, ids.length - start);
      const part = ids.slice(start, start + take);
      const partProbes = Math.min(probes, take);
      batch.push({ keys: group.keys, probes: part.slice(0, partProbes), others: part.slice(partProbes) });
      probes -= partProbes;
      start += take;
      size += take;
      if (size >= RENEW_BATCH) {
        yield batch;
        batch = [];
        size = 0;
      }
    }
  }
  if (batch.length > 0) yield batch;
}

export class RedisStore implements Store {
  readonly #client: Redis | Cluster;
  /** The socket is corked until the next check phase (#oneWritePerTick). */
  #corked = false;
  readonly #ownsClient: boolean;
  readonly #keys: KeyLayout;
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #checkDeadlines: boolean;
  /** Acquire's keys per pool layout object (the gateway keeps one per pool), checked against its name and deployments. */
  readonly #poolKeys = new WeakMap<PoolLayout, PoolKeys>();
  /** Redis TIME minus this instance's clock (ms); undefined until a usable sample came back. */
  #clockOffsetMs: number | undefined;
  /** When the latest sample was sent (this instance's clock), and whether one is under way. */
  #clockSampledAt = -Infinity;
  #clockSampling = false;
  readonly #onReady = (): void => void this.#sampleClock();

  /** Takes a client to share (the caller closes it) or a URL (the store creates and closes its client). */
  constructor(client: Redis | Cluster | string, options: RedisStoreOptions = {}) {
    this.#windowMs = validWindowMs(options.windowMs);
    this.#now = options.now ?? monotonicNow;
    this.#checkDeadlines = options.checkDeadlines ?? true;
    this.#keys = new KeyLayout(options.keyPrefix ?? DEFAULT_KEY_PREFIX);
    if (typeof client === 'string') {
      this.#client = new Redis(client, STORE_REDIS_OPTIONS);
      // Failures surface as rejected commands (and ping false); without a listener ioredis logs each one.
      this.#client.on('error', () => {});
      this.#ownsClient = true;
    } else {
      this.#client = client;
      this.#ownsClient = options.closeClient ?? false;
    }
    const scripts = luaScripts();
    // defineCommand sends EVALSHA and falls back to EVAL when the server does not know the script yet.
    for (const name of SCRIPT_NAMES) this.#client.defineCommand(commandName(name), { lua: scripts[name] });
    // The offset estimate: on every (re)connect, at once when a shared client is up already, and when a
    // call finds it older than CLOCK_SAMPLE_INTERVAL_MS (no timer: an idle store sends nothing).
    this.#client.on('ready', this.#onReady);
    if (this.#client.status === 'ready') void this.#sampleClock();
  }

  /** The estimate of Redis TIME minus this instance's clock (ms), for diagnostics; undefined until measured. */
  get clockOffsetMs(): number | undefined {
    return this.#clockOffsetMs;
  }

  /** The ioredis client, for callers that need it (e.g. to share with BullMQ); do not quit it. */
  get client(): Redis | Cluster {
    return this.#client;
  }

  async acquire(input: AcquireInput): Promise<AcquireResult> {
    const { pool } = input;
    if (input.background && input.queue) throw new Error('store acquire: background work never waits in the queue (background with queue)');
    if (pool.deployments.length === 0) return { ok: false, reason: 'unavailable', retryAfterMs: this.#windowMs };
    const excluded = new Set(input.exclude ?? []);
    const tokens = wholeTokens(input.estimatedTokens);
    const { keys } = this.#acquireKeys(pool);
    const args: ScriptArg[] = [input.leaseId, Math.max(1, wholeMs(input.leaseMs)), tokens, this.#windowMs, pool.strategy];
    args.push(Math.random(), Math.random());
    args.push(input.queue?.ticket ?? '', input.queue ? Math.max(1, wholeMs(input.queue.ttlMs)) : 0, this.#deadline());
    // The slow-start draws get a seed of their own, independent of the strategy's two numbers.
    args.push(slowStartLength(input.slowStartMs), Math.floor(Math.random() * 2 ** 31));
    args.push(input.background ? backgroundShare(input.background) : '');
    for (const deployment of pool.deployments) {
      args.push(
        deployment.priority,
        deployment.weight,
        budgetArg(deployment.tpm),
        budgetArg(deployment.rpm),
        excluded.has(deployment.id) ? 1 : 0,
      );
    }
    const [granted = 0, first = 0, second = 0, probe = 0] = numbers(await this.#run('acquire', keys, args));
    if (granted !== 1 && first === LATE_ACQUIRE) throw new LateCallError('acquire');
    if (granted !== 1) {
      return { ok: false, reason: REASONS[first as 1 | 2 | 3] ?? 'unavailable', retryAfterMs: second };
    }
    const deployment = pool.deployments[first - 1];
    if (!deployment) throw new Error(`store acquire chose deployment #${first} of ${pool.deployments.length}`);
    return {
      ok: true,
      lease: { pool: pool.name, deploymentId: deployment.id, leaseId: input.leaseId, bucket: second, tokens, probe: probe === 1 },
    };
  }

  release(lease: Lease, chargedTokens?: number, observed?: WindowObservation): Promise<void> {
    return this.#release(lease, chargedTokens, observed, false);
  }

  withdraw(lease: Lease): Promise<void> {
    return this.#release(lease, undefined, undefined, true);
  }

  async #release(
    lease: Lease,
    chargedTokens: number | undefined,
    observed: WindowObservation | undefined,
    withdraw: boolean,
  ): Promise<void> {
    const { state, leases, window } = this.#keys.deployment(lease.pool, lease.deploymentId);
    const charged = chargedTokens === undefined ? '' : wholeTokens(chargedTokens);
    const { usedTokens, usedRequests } = observedCounts(observed);
    await this.#run(
      'release',
      [leases, window, state, this.#keys.inflight(lease.pool), this.#keys.states(lease.pool)],
      [
        lease.leaseId,
        lease.bucket,
        lease.tokens,
        charged,
        this.#windowMs,
        usedTokens ?? '',
        usedRequests ?? '',
        this.#deadline(),
        lease.probe ? 1 : '',
        withdraw ? 1 : '',
      ],
    );
  }

  async observe(pool: string, deploymentId: string, observed: WindowObservation): Promise<void> {
    await this.release(observationLease(pool, deploymentId), undefined, observed);
  }

  async leaveQueue(pool: string, ticket: string): Promise<void> {
    const { order, deadlines } = this.#keys.queue(pool);
    await this.#run('leave-queue', [order, deadlines], [ticket]);
  }

  async acquireQuota(input: QuotaInput): Promise<QuotaResult> {
    const tokens = wholeTokens(input.estimatedTokens);
    const reply = numbers(
      await this.#run(
        'acquire-quota',
        [this.#keys.clientWindow(input.subject)],
        [tokens, this.#windowMs, budgetArg(input.tpm), budgetArg(input.rpm), this.#deadline()],
      ),
    );
    const [granted = 0, first = 0, second = 0, third, fourth] = reply;
    if (granted !== 1 && first === LATE_QUOTA) throw new LateCallError('acquire-quota');
    if (granted === 1) {
      return { ok: true, lease: { subject: input.subject, bucket: first, tokens }, ...remainingFigures(second, third) };
    }
    return {
      ok: false,
      reason: QUOTA_REASONS[first as 1 | 2] ?? 'tokens',
      retryAfterMs: second,
      ...remainingFigures(third, fourth),
    };
  }

  async releaseQuota(lease: QuotaLease, chargedTokens?: number): Promise<void> {
    // Nothing to correct when the estimate was the cost (a round trip saved, in Redis's case).
    if (chargedTokens === undefined || wholeTokens(chargedTokens) === lease.tokens) return;
    await this.#run(
      'release-quota',
      [this.#keys.clientWindow(lease.subject)],
      [lease.bucket, lease.tokens, wholeTokens(chargedTokens), this.#windowMs],
    );
  }

  /**
   * One renew script per pool per RENEW_BATCH leases, each sent after the previous one answered: Redis
   * serves other clients between them, so no single call holds it long however many leases are in flight
   * (a renewal of 20 000 leases is 100 short calls, not one long one). A failing call ends the round: the
   * rest would likely fail too, and the keeper renews again on its next round.
   */
  async renew(leases: readonly Lease[], leaseMs: number): Promise<void> {
    const lifetime = Math.max(1, wholeMs(leaseMs));
    for (const [pool, groups] of this.#renewGroups(leases)) {
      for (const batch of renewBatches(groups)) {
        const keys: string[] = [this.#keys.inflight(pool), this.#keys.states(pool)];
        const args: ScriptArg[] = [lifetime, this.#deadline()];
        for (const group of batch) {
          keys.push(group.keys.leases, group.keys.state);
          args.push(group.probes.length + group.others.length, group.probes.length, ...group.probes, ...group.others);
        }
        if (Number(await this.#run('renew', keys, args)) < 0) throw new LateCallError('renew');
      }
    }
  }

  /** Leases by pool, then by deployment. */
  #renewGroups(leases: readonly Lease[]): Map<string, Map<string, RenewGroup>> {
    const byPool = new Map<string, Map<string, RenewGroup>>();
    for (const lease of leases) {
      let byDeployment = byPool.get(lease.pool);
      if (!byDeployment) {
        byDeployment = new Map();
        byPool.set(lease.pool, byDeployment);
      }
      let group = byDeployment.get(lease.deploymentId);
      if (!group) {
        group = { keys: this.#keys.deployment(lease.pool, lease.deploymentId), probes: [], others: [] };
        byDeployment.set(lease.deploymentId, group);
      }
      (lease.probe ? group.probes : group.others).push(lease.leaseId);
    }
    return byPool;
  }

  async cooldown(pool: string, deploymentId: string, durationMs: number, options?: SlowStartOption): Promise<number> {
    return Number(await this.#run('cooldown', this.#stateKeys(pool, deploymentId), [wholeMs(durationMs), slowStartArg(options)]));
  }

  async openCircuit(pool: string, deploymentId: string, durationMs: number): Promise<void> {
    await this.#run('open-circuit', this.#stateKeys(pool, deploymentId), [wholeMs(durationMs)]);
  }

  async closeCircuit(pool: string, deploymentId: string): Promise<void> {
    await this.#run('close-circuit', this.#stateKeys(pool, deploymentId), []);
  }

  async drain(pool: string, deploymentId: string): Promise<boolean> {
    return Number(await this.#run('drain', this.#stateKeys(pool, deploymentId), [])) === 1;
  }

  async enable(pool: string, deploymentId: string): Promise<boolean> {
    return Number(await this.#run('enable', this.#stateKeys(pool, deploymentId), [])) === 1;
  }

  async reset(pool: string, deploymentId: string, options?: SlowStartOption): Promise<void> {
    await this.#run('reset', this.#stateKeys(pool, deploymentId), [slowStartArg(options)]);
  }

  async snapshot(pool: PoolLayout): Promise<DeploymentSnapshot[]> {
    if (pool.deployments.length === 0) return [];
    const keys = this.#acquireKeys(pool).keys.slice(POOL_KEYS);
    const values = numbers(await this.#run('snapshot', keys, [this.#windowMs]));
    return pool.deployments.map((deployment, i) => {
      const [
        inFlight = 0,
        tokens = 0,
        requests = 0,
        cooldownUntil = 0,
        circuit = 0,
        openUntil = 0,
        drained = 0,
        resetAt = 0,
        slowStartSince = 0,
      ] = values.slice(i * SNAPSHOT_FIELDS, (i + 1) * SNAPSHOT_FIELDS);
      return {
        id: deployment.id,
        inFlight,
        tokensInWindow: tokens,
        requestsInWindow: requests,
        cooldownUntil,
        circuit: CIRCUITS[circuit] ?? 'closed',
        circuitOpenUntil: openUntil,
        drained: drained === 1,
        resetAt,
        slowStartSince,
      };
    });
  }

  /** ioredis says so as soon as the connection drops (it then reconnects); a frozen server still looks connected. */
  connected(): boolean {
    const { status } = this.#client;
    return status !== 'reconnecting' && status !== 'close' && status !== 'end';
  }

  async ping(): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), PING_TIMEOUT_MS);
    });
    // TIME rather than PING: the same round trip refreshes the clock offset estimate.
    const answer = this.#sampleClock();
    try {
      return await Promise.race([answer, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    this.#client.off('ready', this.#onReady);
    if (!this.#ownsClient) return;
    if (this.#client.status === 'ready') {
      try {
        await this.#client.quit();
        return;
      } catch {
        // Fall through: drop the connection instead.
      }
    }
    this.#client.disconnect();
  }

  /** Acquire's keys for a pool layout: remembered per layout object while its name and deployments stay the same. */
  #acquireKeys(pool: PoolLayout): PoolKeys {
    const known = this.#poolKeys.get(pool);
    if (known && known.name === pool.name && known.deployments === pool.deployments && sameIds(known, pool)) return known;
    const queue = this.#keys.queue(pool.name);
    const keys = [this.#keys.cursor(pool.name), queue.order, queue.deadlines, this.#keys.inflight(pool.name), this.#keys.states(pool.name)];
    for (const deployment of pool.deployments) {
      const { state, leases, window } = this.#keys.deployment(pool.name, deployment.id);
      keys.push(state, leases, window);
    }
    const built: PoolKeys = { name: pool.name, deployments: pool.deployments, keys, ids: pool.deployments.map((d) => d.id) };
    this.#poolKeys.set(pool, built);
    return built;
  }

  /** A deployment's state hash and its pool's state index: the keys of the health scripts. */
  #stateKeys(pool: string, deploymentId: string): string[] {
    return [this.#keys.deployment(pool, deploymentId).state, this.#keys.states(pool)];
  }

  /** The commandTimeout the client gives up after (ms), or undefined when it waits for ever. */
  #commandTimeoutMs(): number | undefined {
    const client = this.#client;
    const timeout = client.isCluster ? (client as Cluster).options.redisOptions?.commandTimeout : (client as Redis).options.commandTimeout;
    return typeof timeout === 'number' && Number.isFinite(timeout) && timeout > 0 ? timeout : undefined;
  }

  /**
   * The moment (epoch ms, Redis clock) the client gives up on a command sent now: the argument of the
   * scripts that refuse to act late. '' when it cannot be known (no offset estimate yet, no timeout).
   */
  #deadline(): ScriptArg {
    const timeoutMs = this.#commandTimeoutMs();
    if (!this.#checkDeadlines || timeoutMs === undefined) return '';
    const nowMs = this.#now();
    const stale = this.#clockOffsetMs === undefined || nowMs - this.#clockSampledAt >= CLOCK_SAMPLE_INTERVAL_MS;
    // Sent in the same tick as the call: on one Redis both leave in one write (#oneWritePerTick).
    if (stale && !this.#clockSampling) void this.#sampleClock();
    if (this.#clockOffsetMs === undefined) return '';
    return Math.ceil(nowMs + timeoutMs + this.#clockOffsetMs);
  }

  /**
   * One TIME round trip: true when Redis answered. Its reply, taken at the middle of the round trip,
   * becomes the offset estimate unless the round trip was too long to say much.
   */
  async #sampleClock(): Promise<boolean> {
    const sentAt = this.#now();
    this.#clockSampledAt = sentAt;
    this.#clockSampling = true;
    let reply: unknown[];
    this.#oneWritePerTick();
    try {
      reply = await this.#client.time();
    } catch {
      return false;
    } finally {
      this.#clockSampling = false;
    }
    const receivedAt = this.#now();
    const redisMs = Number(reply[0]) * 1000 + Number(reply[1]) / 1000;
    if (!Number.isFinite(redisMs)) return false;
    if (receivedAt - sentAt <= CLOCK_SAMPLE_MAX_RTT_MS) this.#clockOffsetMs = redisMs - (sentAt + receivedAt) / 2;
    return true;
  }

  /**
   * The commands each Redis (each master of a cluster) is sent until the event loop's check phase
   * (one request's release, the next requests' acquires, a quota check beside its acquire) leave in
   * one write, as with ioredis's auto-pipelining, but without its pipeline object, callback and extra
   * promise per command: the sockets are corked until setImmediate. Less gateway CPU per request
   * than auto-pipelining for the same Redis CPU; with neither, Redis spends more (docs/scale.md).
   * Unlike a cluster pipeline, every command keeps its own redirections (MOVED, ASK).
   */
  #oneWritePerTick(): void {
    if (this.#corked) return;
    const client = this.#client;
    if (!client.isCluster && (client as Redis).options.enableAutoPipelining) return;
    const nodes = client.isCluster ? (client as Cluster).nodes('master') : [client as Redis];
    // Before `ready`, commands wait in ioredis's offline queue, which it writes out itself.
    const sockets = nodes.filter((node) => node.status === 'ready' && node.stream).map((node) => node.stream);
    if (sockets.length === 0) return;
    this.#corked = true;
    for (const socket of sockets) socket.cork();
    setImmediate(() => {
      this.#corked = false;
      // The sockets corked, even one closed meanwhile (uncork then does nothing more).
      for (const socket of sockets) socket.uncork();
    });
  }

  #run(script: ScriptName, keys: readonly string[], args: readonly ScriptArg[]): Promise<unknown> {
    this.#oneWritePerTick();
    const command = (this.#client as unknown as ScriptCommands)[commandName(script)];
    if (!command) throw new Error(`store script ${script} is not defined on the Redis client`);
    return command.call(this.#client, keys.length, ...keys, ...args);
  }
}
