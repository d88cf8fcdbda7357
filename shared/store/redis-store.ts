/**
 * Store on Redis: every decision is one Lua script (one round trip), atomic across all gateway
 * instances, with time taken from the Redis server so skewed instance clocks agree. Key layout in
 * keys.ts, scripts with their KEYS/ARGV in lua/.
 */
import { Redis, type Cluster, type RedisOptions } from 'ioredis';
import { DEFAULT_KEY_PREFIX, observationLease, observedCounts, validWindowMs, wholeMs, wholeTokens } from './constants.ts';
import { KeyLayout } from './keys.ts';
import { luaScripts, SCRIPT_NAMES, type ScriptName } from './lua-scripts.ts';
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
  // Commands issued in the same tick (one request's release, the next one's acquire) leave in one write.
  enableAutoPipelining: true,
  maxRetriesPerRequest: 1,
  commandTimeout: 2000,
  connectTimeout: 2000,
  retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 500),
};

/** How long ping waits before reporting the store as not answering. */
const PING_TIMEOUT_MS = 1000;

const REASONS = { 1: 'unavailable', 2: 'no-budget', 3: 'queued' } as const;
const QUOTA_REASONS = { 1: 'tokens', 2: 'requests' } as const;
const CIRCUITS: Record<number, CircuitState> = { 0: 'closed', 1: 'open', 2: 'half-open' };
const SNAPSHOT_FIELDS = 6;

/** Command names are namespaced because a caller's client may define commands of its own. */
function commandName(script: ScriptName): string {
  return `spillway_${script.replaceAll('-', '_')}`;
}

function numbers(reply: unknown): number[] {
  if (!Array.isArray(reply)) throw new Error(`store script returned ${typeof reply}, expected an array`);
  return reply.map(Number);
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

export class RedisStore implements Store {
  readonly #client: Redis | Cluster;
  readonly #ownsClient: boolean;
  readonly #keys: KeyLayout;
  readonly #windowMs: number;

  /** Takes a client to share (the caller closes it) or a URL (the store creates and closes its client). */
  constructor(client: Redis | Cluster | string, options: StoreOptions = {}) {
    this.#windowMs = validWindowMs(options.windowMs);
    this.#keys = new KeyLayout(options.keyPrefix ?? DEFAULT_KEY_PREFIX);
    if (typeof client === 'string') {
      this.#client = new Redis(client, STORE_REDIS_OPTIONS);
      // Failures surface as rejected commands (and ping false); without a listener ioredis logs each one.
      this.#client.on('error', () => {});
      this.#ownsClient = true;
    } else {
      this.#client = client;
      this.#ownsClient = false;
    }
    const scripts = luaScripts();
    // defineCommand sends EVALSHA and falls back to EVAL when the server does not know the script yet.
    for (const name of SCRIPT_NAMES) this.#client.defineCommand(commandName(name), { lua: scripts[name] });
  }

  /** The ioredis client, for callers that need it (e.g. to share with BullMQ); do not quit it. */
  get client(): Redis | Cluster {
    return this.#client;
  }

  async acquire(input: AcquireInput): Promise<AcquireResult> {
    const { pool } = input;
    if (pool.deployments.length === 0) return { ok: false, reason: 'unavailable', retryAfterMs: this.#windowMs };
    const excluded = new Set(input.exclude ?? []);
    const tokens = wholeTokens(input.estimatedTokens);
    const queue = this.#keys.queue(pool.name);
    const keys = [this.#keys.cursor(pool.name), queue.order, queue.deadlines];
    const args: ScriptArg[] = [input.leaseId, Math.max(1, wholeMs(input.leaseMs)), tokens, this.#windowMs, pool.strategy];
    args.push(Math.random(), Math.random());
    args.push(input.queue?.ticket ?? '', input.queue ? Math.max(1, wholeMs(input.queue.ttlMs)) : 0);
    for (const deployment of pool.deployments) {
      const { state, leases, window } = this.#keys.deployment(pool.name, deployment.id);
      keys.push(state, leases, window);
      args.push(
        deployment.priority,
        deployment.weight,
        budgetArg(deployment.tpm),
        budgetArg(deployment.rpm),
        excluded.has(deployment.id) ? 1 : 0,
      );
    }
    const [granted = 0, first = 0, second = 0, probe = 0] = numbers(await this.#run('acquire', keys, args));
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

  async release(lease: Lease, chargedTokens?: number, observed?: WindowObservation): Promise<void> {
    const { state, leases, window } = this.#keys.deployment(lease.pool, lease.deploymentId);
    const charged = chargedTokens === undefined ? '' : wholeTokens(chargedTokens);
    const { usedTokens, usedRequests } = observedCounts(observed);
    await this.#run(
      'release',
      [leases, window, state],
      [lease.leaseId, lease.bucket, lease.tokens, charged, this.#windowMs, usedTokens ?? '', usedRequests ?? ''],
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
        [tokens, this.#windowMs, budgetArg(input.tpm), budgetArg(input.rpm)],
      ),
    );
    const [granted = 0, first = 0, second = 0, third, fourth] = reply;
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

  async renew(leases: readonly Lease[], leaseMs: number): Promise<void> {
    const byPool = new Map<string, Lease[]>();
    for (const lease of leases) {
      const group = byPool.get(lease.pool);
      if (group) group.push(lease);
      else byPool.set(lease.pool, [lease]);
    }
    // One script per pool (its keys share a slot); sent together, so the calls share one round trip.
    await Promise.all(
      [...byPool.values()].map((group) => {
        const keys: string[] = [];
        const args: ScriptArg[] = [Math.max(1, wholeMs(leaseMs))];
        for (const lease of group) {
          const { state, leases: leasesKey } = this.#keys.deployment(lease.pool, lease.deploymentId);
          keys.push(leasesKey, state);
          args.push(lease.leaseId);
        }
        return this.#run('renew', keys, args);
      }),
    );
  }

  async cooldown(pool: string, deploymentId: string, durationMs: number): Promise<number> {
    const { state } = this.#keys.deployment(pool, deploymentId);
    return Number(await this.#run('cooldown', [state], [wholeMs(durationMs)]));
  }

  async openCircuit(pool: string, deploymentId: string, durationMs: number): Promise<void> {
    const { state } = this.#keys.deployment(pool, deploymentId);
    await this.#run('open-circuit', [state], [wholeMs(durationMs)]);
  }

  async closeCircuit(pool: string, deploymentId: string): Promise<void> {
    const { state } = this.#keys.deployment(pool, deploymentId);
    await this.#run('close-circuit', [state], []);
  }

  async snapshot(pool: PoolLayout): Promise<DeploymentSnapshot[]> {
    if (pool.deployments.length === 0) return [];
    const keys = pool.deployments.flatMap((deployment) => {
      const { state, leases, window } = this.#keys.deployment(pool.name, deployment.id);
      return [state, leases, window];
    });
    const values = numbers(await this.#run('snapshot', keys, [this.#windowMs]));
    return pool.deployments.map((deployment, i) => {
      const [inFlight = 0, tokens = 0, requests = 0, cooldownUntil = 0, circuit = 0, openUntil = 0] = values.slice(
        i * SNAPSHOT_FIELDS,
        (i + 1) * SNAPSHOT_FIELDS,
      );
      return {
        id: deployment.id,
        inFlight,
        tokensInWindow: tokens,
        requestsInWindow: requests,
        cooldownUntil,
        circuit: CIRCUITS[circuit] ?? 'closed',
        circuitOpenUntil: openUntil,
      };
    });
  }

  async ping(): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), PING_TIMEOUT_MS);
    });
    const answer = this.#client.ping().then(
      (reply) => reply === 'PONG',
      () => false,
    );
    try {
      return await Promise.race([answer, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
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

  #run(script: ScriptName, keys: readonly string[], args: readonly ScriptArg[]): Promise<unknown> {
    const command = (this.#client as unknown as ScriptCommands)[commandName(script)];
    if (!command) throw new Error(`store script ${script} is not defined on the Redis client`);
    return command.call(this.#client, keys.length, ...keys, ...args);
  }
}
