/**
 * A private Redis Cluster on free loopback ports, without persistence: `masters` shards of 16384 / masters
 * slots each, `replicasPerMaster` replicas per shard, one `redis-server --cluster-enabled yes` per node in
 * its own dir under `dataDir` (its nodes.conf lives there). The tests (test/helpers/redis-cluster.ts) and
 * the load tools start it the same way.
 *
 * The cluster is assembled with cluster commands rather than `redis-cli --cluster create`: it needs no
 * second binary, knows which replica serves which master, and returns as soon as the cluster is up
 * instead of polling once a second. startRedisCluster returns only when every node says cluster_state:ok,
 * knows every other node, and every replica has finished its first sync: a failover test can kill a
 * master at once and count on its replica.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { freePort, stopChild } from './process-set.ts';
import { launchRedis } from './redis-server.ts';

export interface RedisClusterAddress {
  host: string;
  port: number;
}

export interface RedisClusterHandle {
  /** "127.0.0.1:p1,127.0.0.1:p2,..." : every node, for REDIS_CLUSTER_NODES */
  seeds: string;
  nodes: RedisClusterAddress[];
  /** the nodes that are masters of slots now (asks the cluster) */
  masters(): Promise<RedisClusterAddress[]>;
  /** SIGKILL (default) or another signal to the node on that port */
  kill(port: number, signal?: NodeJS.Signals): Promise<void>;
  stop(): Promise<void>;
}

export interface RedisClusterOptions {
  binary: string;
  dataDir: string;
  /** Shards (each a master with its slot range); default 3, the fewest Redis accepts for a real cluster. */
  masters?: number;
  /** Replicas of each master; default 0. */
  replicasPerMaster?: number;
  /** cluster-node-timeout: how long a silent node takes to be marked failed (and its replica promoted). */
  nodeTimeoutMs?: number;
}

const HOST = '127.0.0.1';
const SLOTS = 16384;
const DEFAULT_NODE_TIMEOUT_MS = 5000;
/** Each bound of the assembly: nodes meeting, replicas syncing, every node saying ok. */
const ASSEMBLE_TIMEOUT_MS = 15_000;
/** A node's port and its bus port are both picked free; one can be taken before redis-server binds it. */
const START_ATTEMPTS = 3;
/** Children started under `setpriv --pdeathsig SIGKILL` die with this process even when it is SIGKILLed. */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((path) => existsSync(path));

interface Node extends RedisClusterAddress {
  process: ChildProcess;
}

export async function startRedisCluster(options: RedisClusterOptions): Promise<RedisClusterHandle> {
  const masters = options.masters ?? 3;
  const replicasPerMaster = options.replicasPerMaster ?? 0;
  if (!Number.isInteger(masters) || masters < 1) throw new Error(`redis cluster: masters must be a positive integer, got ${masters}`);
  if (!Number.isInteger(replicasPerMaster) || replicasPerMaster < 0)
    throw new Error(`redis cluster: replicasPerMaster must be a whole number, got ${replicasPerMaster}`);
  const nodeTimeoutMs = options.nodeTimeoutMs ?? DEFAULT_NODE_TIMEOUT_MS;
  const count = masters * (1 + replicasPerMaster);

  const started = await Promise.allSettled(
    Array.from({ length: count }, (_, i) => startNode(options.binary, join(options.dataDir, `node-${i}`), nodeTimeoutMs)),
  );
  const nodes = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const stop = async () => {
    await Promise.all(nodes.map((node) => stopChild(node.process, 1000)));
  };
  const failed = started.find((result) => result.status === 'rejected');
  if (failed) {
    await stop();
    throw failed.reason;
  }
  try {
    await assemble(nodes, masters, replicasPerMaster);
  } catch (error) {
    await stop();
    throw error;
  }

  const byPort = new Map(nodes.map((node) => [node.port, node]));
  const addresses = nodes.map(({ host, port }) => ({ host, port }));
  return {
    seeds: addresses.map(({ host, port }) => `${host}:${port}`).join(','),
    nodes: addresses,
    masters: () => currentMasters(nodes),
    async kill(port, signal = 'SIGKILL') {
      const node = byPort.get(port);
      if (!node) throw new Error(`redis cluster: no node on port ${port}`);
      if (signal === 'SIGKILL' || signal === 'SIGTERM' || signal === 'SIGINT') await stopChild(node.process, 1000, signal);
      // Another signal (SIGSTOP to freeze a node) does not end the process: nothing to wait for.
      else node.process.kill(signal);
    },
    stop,
  };
}

/** One cluster node: a port from launchRedis and a bus port of its own (port + 10000 may not exist). */
async function startNode(binary: string, dir: string, nodeTimeoutMs: number): Promise<Node> {
  mkdirSync(dir, { recursive: true });
  let lastError: unknown;
  for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
    const busPort = await freePort();
    try {
      const { port, child } = await launchRedis(binary, dir, (args) => {
        const argv = [
          ...args,
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, 'nodes.conf'),
          '--cluster-port',
          String(busPort),
          '--cluster-node-timeout',
          String(nodeTimeoutMs),
          // A replica takes over however long its master was away: the point of a failover test.
          '--cluster-replica-validity-factor',
          '0',
          // A replica's first sync starts at once instead of waiting 5 s for more replicas to join it.
          '--repl-diskless-sync-delay',
          '0',
        ];
        const [file, fileArgs] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', binary, ...argv]] : [binary, argv];
        return { process: spawn(file, fileArgs, { stdio: ['ignore', 'pipe', 'pipe'] }) };
      });
      return { host: HOST, port, process: child.process };
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError instanceof Error ? lastError : new Error(`redis cluster: a node did not start in ${dir}`);
}

/** Slots to the masters, every node introduced to the first, replicas attached; then waits until all is settled. */
async function assemble(nodes: Node[], masters: number, replicasPerMaster: number): Promise<void> {
  const clients = nodes.map((node) => admin(node.port));
  try {
    const ids = await Promise.all(clients.map(async (client) => String(await client.call('CLUSTER', 'MYID'))));
    await Promise.all(
      clients.slice(0, masters).map(async (client, i) => {
        const first = Math.floor((i * SLOTS) / masters);
        const last = Math.floor(((i + 1) * SLOTS) / masters) - 1;
        // Distinct config epochs, as redis-cli gives them: no epoch collision to resolve after the meet.
        await client.call('CLUSTER', 'SET-CONFIG-EPOCH', String(i + 1));
        await client.call('CLUSTER', 'ADDSLOTSRANGE', String(first), String(last));
      }),
    );
    const busPorts = await Promise.all(clients.map(async (client) => configValue(client, 'cluster-port')));
    await Promise.all(nodes.slice(1).map((node, i) => clients[0]!.call('CLUSTER', 'MEET', node.host, String(node.port), busPorts[i + 1]!)));
    // A replica can only follow a master it knows: wait until every node knows every other one.
    await until('every node knows every other one', ASSEMBLE_TIMEOUT_MS, async () => {
      const infos = await Promise.all(clients.map(clusterInfo));
      return infos.every((info) => Number(info.cluster_known_nodes) === nodes.length);
    });
    for (let r = 0; r < replicasPerMaster; r++) {
      await Promise.all(
        Array.from({ length: masters }, (_, m) => clients[masters + r * masters + m]!.call('CLUSTER', 'REPLICATE', ids[m]!)),
      );
    }
    await until('cluster_state:ok on every node, replicas in sync', ASSEMBLE_TIMEOUT_MS, async () => {
      const infos = await Promise.all(clients.map(clusterInfo));
      if (!infos.every((info) => info.cluster_state === 'ok' && Number(info.cluster_slots_ok) === SLOTS)) return false;
      const replication = await Promise.all(clients.slice(masters).map((client) => client.info('replication')));
      return replication.every((text) => /master_link_status:up/.test(text) && /master_sync_in_progress:0/.test(text));
    });
  } finally {
    for (const client of clients) client.disconnect();
  }
}

/** The masters that the first node that answers sees up now, with slots or without. */
async function currentMasters(nodes: Node[]): Promise<RedisClusterAddress[]> {
  let lastError: unknown = new Error('redis cluster: no node is running');
  for (const node of nodes) {
    if (node.process.exitCode !== null || node.process.signalCode !== null) continue;
    const client = admin(node.port);
    try {
      const text = String(await client.call('CLUSTER', 'NODES'));
      return (
        text
          .split('\n')
          .filter(Boolean)
          .map((line) => line.split(' '))
          // A master that owns slots (fields past the 8th): a replica this node has not yet heard is attached
          // still shows as a master of nothing for a moment.
          .filter(([, , flags = '', ...rest]) => {
            const set = flags.split(',');
            return set.includes('master') && !set.includes('fail') && !set.includes('fail?') && rest.length > 5;
          })
          .map(([, address = '']) => {
            // ip:port@cport[,hostname]
            const [hostPort = ''] = address.split('@');
            const colon = hostPort.lastIndexOf(':');
            return { host: hostPort.slice(0, colon) || HOST, port: Number(hostPort.slice(colon + 1)) };
          })
          .sort((a, b) => a.port - b.port)
      );
    } catch (error) {
      lastError = error;
    } finally {
      client.disconnect();
    }
  }
  throw lastError;
}

/** A plain connection to one node for cluster administration: no retries, short timeouts. */
function admin(port: number): Redis {
  const client = new Redis({
    host: HOST,
    port,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    commandTimeout: 2000,
    retryStrategy: () => null,
  });
  client.on('error', () => {});
  return client;
}

async function configValue(client: Redis, name: string): Promise<string> {
  const reply = (await client.call('CONFIG', 'GET', name)) as string[];
  const value = reply[1];
  if (value === undefined) throw new Error(`redis cluster: CONFIG GET ${name} answered nothing`);
  return value;
}

async function clusterInfo(client: Redis): Promise<Record<string, string>> {
  const text = String(await client.call('CLUSTER', 'INFO'));
  return Object.fromEntries(
    text
      .split('\r\n')
      .filter((line) => line.includes(':'))
      .map((line) => {
        const colon = line.indexOf(':');
        return [line.slice(0, colon), line.slice(colon + 1)];
      }),
  );
}

async function until(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (error) {
      lastError = error;
    }
    await sleep(50);
  }
  throw new Error(`redis cluster: ${what}: not after ${timeoutMs} ms${lastError ? ` (${String(lastError)})` : ''}`);
}
