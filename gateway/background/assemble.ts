/**
 * The background stage wired for app.ts: the Redis connections, the Batch API's records
 * (batch-records.ts), the lane that runs the lines (lane.ts), and what the Batch routes need. Only
 * with Redis: without it app.ts builds none of this and the Batch routes answer 503.
 *
 * Two connections: the lane's BullMQ one (maxRetriesPerRequest null, as BullMQ's workers require; each
 * worker opens its own blocking connection beside it), and the records' own, whose commands fail fast
 * instead of waiting for a Redis that is away (a route answers an error, a line is tried again).
 *
 * Settings are bound when the instance starts (a reload's background changes need a restart), except
 * the reserve, read per request with the config in force (http/prepare-request.ts), and the pools whose
 * lines run, read again after a reload (`syncPools`).
 */
import type { RedisOptions } from 'ioredis';
import type { GatewayConfig, GatewaySettings } from '../../shared/config/schema.ts';
import type { Pool } from '../pools.ts';
import { DEFAULT_KEY_PREFIX } from '../../shared/store/constants.ts';
import { connectRedis, type RedisClient, type RedisTarget } from '../../shared/store/redis-target.ts';
import type { Logger } from '../logger.ts';
import type { LaneDepth, Metrics } from '../metrics.ts';
import { createBatchRecords, type BatchStorage } from './batch-records.ts';
import type { BatchRecords } from './contract.ts';
import { Lane } from './lane.ts';
import { ProbeLog, type LastProbe } from './probe-log.ts';
import type { ProbeCredentials, ProbeStore } from './probe-run.ts';
import { startProber, type Prober } from './prober.ts';

export interface BackgroundOptions {
  /** One Redis or a Redis Cluster: the records' keys share the `{batches}` tag, the lane's `{lane}` (one slot each). */
  redis: RedisTarget;
  /** Prefix of every key of the Batch API and its lane (tests share one Redis); DEFAULT_KEY_PREFIX otherwise. */
  prefix?: string;
  /** The config in force (live-config.ts): the background settings at start, the pools at each sync. */
  config: {
    readonly current: { readonly config: GatewayConfig; readonly settings: GatewaySettings; readonly pools: ReadonlyMap<string, Pool> };
  };
  settings: GatewaySettings;
  /** The prober reads deployments' state here and publishes what a probe found (the live store). */
  stores: ProbeStore;
  /** Each deployment's key or Entra ID token, for the probes. */
  credentials: ProbeCredentials;
  /** The lane's mark for the batch's client, as request headers (http/auth.ts LaneMarker). */
  laneHeaders(client: string): Record<string, string>;
  metrics: Metrics;
  logger: Logger;
}

export interface Background {
  /** Files, batches and results; BatchRecords for the lane, the stores for the routes. */
  records: BatchRecords & BatchStorage;
  lane: Lane;
  /** Starts the workers, sending lines to the listener at `url` (the address it bound). */
  start(url: string): Promise<void>;
  /** Workers for pools a reload added. */
  syncPools(): Promise<void>;
  /** What /admin/pools and the status page show of the lane and the prober. */
  status(): Promise<BackgroundStatus>;
  /**
   * Stops taking lines at once; lines running get `graceMs`, then go back to the queue; then the
   * connections close. Called before the listener stops (app.ts): the lines are requests through it.
   */
  close(graceMs: number): Promise<void>;
}

export interface BackgroundStatus {
  /** pool → its lines by state (cluster-wide). */
  lanes: Map<string, Record<LaneDepth['state'], number>>;
  /** pool → deployment → its latest probe (any instance's). */
  probes: Map<string, Map<string, LastProbe>>;
}

/** The records' connection: fail a command rather than wait for a Redis that is away. */
const RECORDS_REDIS_OPTIONS: RedisOptions = {
  maxRetriesPerRequest: 1,
  // An upload writes its file in a few commands of up to the file's size.
  commandTimeout: 10_000,
  connectTimeout: 2000,
  retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 1000),
};

/** A line's whole exchange with the listener: the gateway's deadline for the request, and this margin. */
const LINE_TIMEOUT_MARGIN_MS = 5000;

export function createBackground(options: BackgroundOptions): Background {
  const { redis, config, metrics, logger } = options;
  const prefix = options.prefix ?? DEFAULT_KEY_PREFIX;
  const settings = config.current.config.background;
  const recordsRedis = connectRedis(redis, RECORDS_REDIS_OPTIONS);
  // On a cluster BullMQ reads maxRetriesPerRequest from the nodes' options (redisOptions), where connectRedis puts it.
  const laneRedis = connectRedis(redis, { maxRetriesPerRequest: null, connectTimeout: 2000 });
  // Failures surface as rejected commands and the workers' own 'error' events; without a listener ioredis logs each one.
  recordsRedis.on('error', () => {});
  laneRedis.on('error', () => {});

  const records = createBatchRecords(recordsRedis, settings, { keyPrefix: prefix });
  const lane = new Lane({
    connection: laneRedis,
    // One hash tag for every key of the lane: BullMQ's queues and the lane's own keys share a slot on Redis Cluster.
    prefix: `${prefix}{lane}`,
    records,
    settings,
    pools: () => enabledPools(config.current.config),
    laneHeaders: options.laneHeaders,
    lineTimeoutMs: options.settings.deadlineMs + LINE_TIMEOUT_MARGIN_MS,
    metrics,
    logger,
  });

  // The cluster-wide prober of deployments out of rotation (prober.ts), in instances that run workers.
  let prober: Prober | undefined;
  const probeLog = new ProbeLog(laneRedis, `${prefix}{lane}`);
  let closing: Promise<void> | undefined;
  return {
    records,
    lane,
    start(url) {
      if (settings.workers && !closing)
        prober ??= startProber({
          connection: laneRedis,
          prefix: `${prefix}{lane}`,
          config,
          store: options.stores,
          credentials: options.credentials,
          log: probeLog,
          metrics,
          logger,
        });
      return lane.start(url);
    },
    syncPools: () => lane.syncPools(),
    async status() {
      const [depths, probes] = await Promise.all([lane.depths(), probeLog.read()]);
      const lanes = new Map<string, Record<LaneDepth['state'], number>>();
      for (const { pool, state, lines } of depths) {
        const counts = lanes.get(pool) ?? { waiting: 0, delayed: 0, active: 0 };
        counts[state] = lines;
        lanes.set(pool, counts);
      }
      return { lanes, probes };
    },
    close(graceMs) {
      closing ??= (async () => {
        await Promise.all([lane.close(graceMs), prober?.close()]);
        await Promise.all([disconnect(laneRedis), disconnect(recordsRedis)]);
      })();
      return closing;
    },
  };
}

/** A clean QUIT while Redis answers; a QUIT to a Redis that is away would wait in the offline queue for good. */
async function disconnect(redis: RedisClient): Promise<void> {
  if (redis.status !== 'ready') return redis.disconnect();
  const quit = redis.quit().then(
    () => undefined,
    () => undefined,
  );
  const timer = setTimeout(() => redis.disconnect(), QUIT_WAIT_MS);
  await quit;
  clearTimeout(timer);
}

/** How long a QUIT may take before the connection is dropped. */
const QUIT_WAIT_MS = 1000;

/** The pools whose lines run (pool.background.enabled, default true). */
function enabledPools(config: GatewayConfig): string[] {
  return Object.entries(config.pools)
    .filter(([, pool]) => pool.background?.enabled !== false)
    .map(([name]) => name);
}
