/**
 * Where the gateway's Redis is, and the one place that turns it into an ioredis client: one Redis
 * (REDIS_URL) or a Redis Cluster (REDIS_CLUSTER_NODES, comma-separated seeds). Every user of Redis (the
 * store, the Batch API's records, the background lane) asks here with its own client options, so a
 * cluster gets the same options per node (`redisOptions`) plus the cluster's own, chosen once below.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';

export interface RedisNodeAddress {
  host: string;
  port: number;
}

export type RedisTarget =
  | { kind: 'single'; url: string }
  | {
      kind: 'cluster';
      /** Seeds: any reachable one is enough, the client learns the rest of the cluster from it. */
      nodes: RedisNodeAddress[];
      /** From `redis[s]://user:password@host:port` seeds: the same for every node. */
      username?: string;
      password?: string;
      tls?: boolean;
    };

/** A client of either kind; the store, the records and BullMQ take both. */
export type RedisClient = Redis | Cluster;

/**
 * The cluster client's settings, whoever uses it:
 * - scaleReads 'master': every read is part of a decision (or a script, which runs on the master
 *   anyway); a replica's copy lags and would route on stale state.
 * - retryDelayOnMoved 0: a MOVED names the new owner, so the command goes there at once (and the slot
 *   map is refreshed in the background); ASK is always followed at once.
 * - retryDelayOnFailover / retryDelayOnClusterDown 100 ms: a command whose node dropped, or that met
 *   CLUSTERDOWN while a replica is being promoted, is sent again after a slot map refresh; with
 *   maxRedirections 16 that keeps trying for ~1.6 s, and never past the caller's commandTimeout (set once
 *   per command, across its redirections), so the store still fails fast to its fallback.
 * - slotsRefreshTimeout 2 s: CLUSTER SLOTS from a busy node on a loaded machine can take longer than the
 *   default second, and a refresh that times out leaves the old (wrong) map in place.
 */
const CLUSTER_OPTIONS: ClusterOptions = {
  scaleReads: 'master',
  retryDelayOnMoved: 0,
  retryDelayOnFailover: 100,
  retryDelayOnClusterDown: 100,
  retryDelayOnTryAgain: 100,
  maxRedirections: 16,
  slotsRefreshTimeout: 2000,
  slotsRefreshInterval: 5000,
};

/** A target from the environment's two variables; undefined when neither is set (in-memory store). */
export function redisTargetFrom(env: {
  REDIS_URL?: string | undefined;
  REDIS_CLUSTER_NODES?: string | undefined;
}): RedisTarget | undefined {
  if (env.REDIS_URL && env.REDIS_CLUSTER_NODES)
    throw new Error('set REDIS_URL (one Redis) or REDIS_CLUSTER_NODES (a Redis Cluster), not both');
  if (env.REDIS_URL) return { kind: 'single', url: env.REDIS_URL };
  if (env.REDIS_CLUSTER_NODES) return parseClusterNodes(env.REDIS_CLUSTER_NODES);
  return undefined;
}

/**
 * `host:port,host:port,…`; a seed may also be a `redis://` or `rediss://` URL, whose user, password and
 * TLS then apply to every node (they must agree across seeds). Throws with what is wrong.
 */
export function parseClusterNodes(text: string): Extract<RedisTarget, { kind: 'cluster' }> {
  const seeds = text
    .split(',')
    .map((seed) => seed.trim())
    .filter(Boolean);
  if (seeds.length === 0) throw new Error('no host:port seed');
  const nodes: RedisNodeAddress[] = [];
  let auth: { username: string; password: string; tls: boolean } | undefined;
  for (const seed of seeds) {
    const isUrl = /^rediss?:\/\//.test(seed);
    let url: URL;
    try {
      url = new URL(isUrl ? seed : `redis://${seed}`);
    } catch {
      throw new Error(`seed ${JSON.stringify(redact(seed))} is not host:port`);
    }
    const port = Number(url.port);
    if (!url.hostname || !url.port || !Number.isInteger(port) || port < 1 || port > 65535 || (url.pathname && url.pathname !== '/'))
      throw new Error(`seed ${JSON.stringify(redact(seed))} is not host:port (a port is required)`);
    const seedAuth = {
      username: decodeURIComponent(url.username),
      password: decodeURIComponent(url.password),
      tls: url.protocol === 'rediss:',
    };
    if (isUrl) {
      if (auth && (auth.username !== seedAuth.username || auth.password !== seedAuth.password || auth.tls !== seedAuth.tls))
        throw new Error('the seeds disagree on user, password or TLS: every node of a cluster takes the same');
      auth = seedAuth;
    }
    // IPv6 hosts come back bracketed from URL; ioredis wants them bare.
    nodes.push({ host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port });
  }
  return {
    kind: 'cluster',
    nodes,
    ...(auth?.username ? { username: auth.username } : {}),
    ...(auth?.password ? { password: auth.password } : {}),
    ...(auth?.tls ? { tls: true } : {}),
  };
}

/**
 * A client for `target` with `options`: as given for one Redis; for a cluster, the same options for every
 * node (redisOptions), its retryStrategy as the cluster's reconnect strategy, its offline queue at the
 * cluster level where ioredis reads it, no auto-pipelining (see below), and the cluster settings above
 * (`cluster` overrides them).
 */
export function connectRedis(target: RedisTarget, options: RedisOptions = {}, cluster: ClusterOptions = {}): RedisClient {
  if (target.kind === 'single') return new Redis(target.url, options);
  // enableAutoPipelining is dropped on a cluster: ioredis (5.11) picks an auto-pipeline's node by the
  // command's first argument, which for a script is its key count, not a key, so scripts for pools on
  // different masters land in one pipeline and fail ("All keys in the pipeline should belong to the same
  // slots allocation group", redis/ioredis#2109). Each command then has a write of its own; replies are
  // still not waited for in between.
  const { retryStrategy, enableAutoPipelining: _notOnACluster, enableOfflineQueue, ...nodeOptions } = options;
  return new Cluster(
    target.nodes.map(({ host, port }) => ({ host, port })),
    {
      ...CLUSTER_OPTIONS,
      ...(retryStrategy ? { clusterRetryStrategy: (times: number) => retryStrategy(times) } : {}),
      ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
      redisOptions: {
        ...nodeOptions,
        ...(target.username ? { username: target.username } : {}),
        ...(target.password ? { password: target.password } : {}),
        ...(target.tls ? { tls: {} } : {}),
      },
      ...cluster,
    },
  );
}

/** What the start log calls the store. */
export function storeKind(target: RedisTarget | undefined): 'redis' | 'redis-cluster' | 'memory' {
  return target === undefined ? 'memory' : target.kind === 'single' ? 'redis' : 'redis-cluster';
}

/** The target for a log line: never a password. */
export function describeRedisTarget(target: RedisTarget): string {
  if (target.kind === 'single') return redact(target.url);
  const scheme = target.tls ? 'rediss' : 'redis';
  const user = target.username ? `${target.username}@` : target.password ? '***@' : '';
  return `cluster ${scheme}://${user}${target.nodes.map(({ host, port }) => `${host.includes(':') ? `[${host}]` : host}:${port}`).join(',')}`;
}

/** A URL (or anything URL-like) with its password replaced. */
function redact(text: string): string {
  return text.replace(/^(rediss?:\/\/[^:@/]*):[^@/]*@/, '$1:***@');
}
