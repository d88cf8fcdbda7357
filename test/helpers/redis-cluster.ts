/**
 * A private Redis Cluster for a test file (shared/processes/redis-cluster.ts), in a temp dir removed at
 * stop, with the target the gateway's store and background take (REDIS_CLUSTER_NODES' form) and plain
 * per-node connections for looking at where keys went.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startRedisCluster, type RedisClusterHandle } from '../../shared/processes/redis-cluster.ts';
import { parseClusterNodes, type RedisTarget } from '../../shared/store/redis-target.ts';
import type { GatewayConfig } from '../../shared/config/schema.ts';
import { startGateway, type RunningGateway } from './gateway.ts';
import { redisServerBinary } from './redis-server.ts';

export interface TestRedisCluster extends RedisClusterHandle {
  /** What REDIS_CLUSTER_NODES=seeds gives the gateway. */
  target: RedisTarget;
  /** A plain (non-cluster) connection to one node, closed at stop. */
  node(port: number): Redis;
}

export async function startTestRedisCluster(
  options: { masters?: number; replicasPerMaster?: number; nodeTimeoutMs?: number } = {},
): Promise<TestRedisCluster> {
  const binary = redisServerBinary();
  if (!binary) throw new Error('redis-server is not installed: the Redis Cluster tests need it (apt-get install -y redis-server)');
  const dir = mkdtempSync(join(tmpdir(), 'spillway-cluster-'));
  let cluster: RedisClusterHandle;
  try {
    cluster = await startRedisCluster({ binary, dataDir: dir, ...options });
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const connections = new Map<number, Redis>();
  return {
    ...cluster,
    target: parseClusterNodes(cluster.seeds),
    node(port) {
      let connection = connections.get(port);
      if (!connection) {
        connection = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, commandTimeout: 2000, retryStrategy: () => null });
        connection.on('error', () => {});
        connections.set(port, connection);
      }
      return connection;
    },
    async stop() {
      for (const connection of connections.values()) connection.disconnect();
      await cluster.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The id of the node on `port` (CLUSTER MYID). */
export async function nodeId(connection: Redis): Promise<string> {
  return String(await connection.call('CLUSTER', 'MYID'));
}

/** The hash slot of a key (CLUSTER KEYSLOT, asked of any node). */
export async function keySlot(connection: Redis, key: string): Promise<number> {
  return Number(await connection.call('CLUSTER', 'KEYSLOT', key));
}

/** Every key of `pattern` on one node (SCAN, bounded by what a test writes). */
export async function nodeKeys(connection: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await connection.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys.sort();
}

/** The master serving `slot` now, by the cluster's word (CLUSTER SLOTS asked of `connection`). */
export async function slotOwner(connection: Redis, slot: number): Promise<number> {
  const ranges = (await connection.call('CLUSTER', 'SLOTS')) as [number, number, [string, number, string]][];
  const range = ranges.find(([first, last]) => slot >= first && slot <= last);
  if (!range) throw new Error(`slot ${slot} has no master`);
  return Number(range[2][1]);
}

/**
 * `perMaster` pool names (`${stem}-N`) for every master, found by asking the cluster where each one's
 * hash tag falls: pool name → the port of its master. Bounded: 50 names per wanted one.
 */
export async function poolsOnEveryMaster(cluster: TestRedisCluster, stem: string, perMaster = 1): Promise<Map<string, number>> {
  const admin = cluster.node(cluster.nodes[0]!.port);
  const masters = (await cluster.masters()).length;
  const found = new Map<string, number>();
  const counts = new Map<number, number>();
  for (let i = 0; i < 50 * masters * perMaster && found.size < masters * perMaster; i++) {
    const name = `${stem}-${i}`;
    const master = await slotOwner(admin, await keySlot(admin, `{pool:${encodeURIComponent(name)}}`));
    if ((counts.get(master) ?? 0) >= perMaster) continue;
    counts.set(master, (counts.get(master) ?? 0) + 1);
    found.set(name, master);
  }
  if (found.size < masters * perMaster) throw new Error(`no ${perMaster} pool names on each of ${masters} masters`);
  return found;
}

/** How many error replies of one kind (its first word: MOVED, ASK, TRYAGAIN) a node sent since its stats were reset (INFO errorstats). */
export async function errorCount(connection: Redis, error: string): Promise<number> {
  const info = await connection.info('errorstats');
  return Number(new RegExp(`errorstat_${error}:count=(\\d+)`).exec(info)?.[1] ?? 0);
}

/**
 * Two in-process instances on `cluster`, sharing the store's keys and the lane under `keyPrefix`. Started
 * at once; when one fails to start, the other is closed before the error goes on.
 */
export async function twoGatewaysOn(
  cluster: TestRedisCluster,
  config: GatewayConfig,
  keyPrefix: string,
): Promise<[RunningGateway, RunningGateway]> {
  const options = { redis: cluster.target, keyPrefix, backgroundPrefix: keyPrefix };
  const [first, second] = await Promise.allSettled([startGateway(config, options), startGateway(config, options)]);
  if (first.status === 'fulfilled' && second.status === 'fulfilled') return [first.value, second.value];
  await Promise.all([first, second].map((started) => (started.status === 'fulfilled' ? started.value.close() : undefined)));
  throw (first.status === 'rejected' ? first : (second as PromiseRejectedResult)).reason;
}
