/**
 * Phase 4 of the scale bench: 6 pools (3 deployments each) on one Redis and on a 3-master Redis
 * Cluster (shared/processes/redis-cluster.ts), 2 pools a master. Store clients in child processes
 * (scale/store-client-worker.ts) run closed loops of acquire + release for a fixed time, more of them
 * step by step, the two topologies in turn (the order rotated every round); the pairs per second and
 * each redis-server's CPU over the step (/proc/<pid>/stat) say how close the busiest Redis came to a
 * core. On a machine with few cores the clients compete with Redis for them: the machine's CPU
 * (/proc/stat) is reported beside, so that a ceiling set by the clients is not read as Redis's.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { commandPath, stopChild, type ProcessSet } from '../../shared/processes/process-set.ts';
import { childPids, cpuMs, cpuMsOf, machineBusyMs } from '../../shared/processes/proc-stats.ts';
import { startRedisCluster } from '../../shared/processes/redis-cluster.ts';
import { DEFAULT_KEY_PREFIX } from '../../shared/store/constants.ts';
import { KeyLayout } from '../../shared/store/keys.ts';
import type { PoolLayout } from '../../shared/store/types.ts';
import { fmt } from '../lib/format.ts';
import { makeWorkDir, REPO_ROOT, startRedis } from '../lib/stack.ts';
import type { ScaleOptions } from './options.ts';
import type { FromStoreClient, StoreClientSpec } from './store-client-worker.ts';

export type Topology = 'single' | 'cluster';
export const TOPOLOGY_LABELS: Record<Topology, string> = { single: 'one Redis', cluster: '3-master Redis Cluster' };

export interface ClusterStep {
  round: number;
  topology: Topology;
  clients: number;
  pairsPerSecond: number;
  errors: number;
  refused: number;
  firstError?: string;
  /** Each redis-server's CPU over the step, in cores (1 = one core busy all along), by port. */
  redisCores: Record<string, number>;
  busiestRedisCores: number;
  clientCores: number;
  /** Every process on the machine, cores. */
  machineCores: number;
}

export interface ClusterResult {
  pools: { name: string; port: Record<Topology, number> }[];
  steps: ClusterStep[];
  cores: number;
}

const log = (line: string) => process.stdout.write(`${line}\n`);
const POOLS = 6;
const DEPLOYMENTS_PER_POOL = 3;
const CONCURRENCY_PER_CLIENT = 32;
/** Budgets far above what the run books: the windows are kept (that is the cost) but never refuse. */
const BUDGET = { tpm: 1_000_000_000, rpm: 100_000_000 };
const READY_TIMEOUT_MS = 15_000;

interface Topo {
  topology: Topology;
  /** redis-server pid by port. */
  nodes: Map<number, number>;
  spec: Omit<StoreClientSpec, 'pools' | 'concurrency'>;
}

/** A redis-server child of this process listening on `port` (its title names the address). */
function redisPid(port: number): number {
  for (const pid of childPids(process.pid)) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`:${port}`)) return pid;
    } catch {
      // gone meanwhile
    }
  }
  throw new Error(`no redis-server child on port ${port}`);
}

const layout = (name: string): PoolLayout => ({
  name,
  strategy: 'least-requests',
  deployments: Array.from({ length: DEPLOYMENTS_PER_POOL }, (_, i) => ({ id: `d${i}`, priority: 1, weight: 1, ...BUDGET })),
});

/** Pool names whose hash tags put `perMaster` pools on each master, and the master of each. */
async function poolsSpread(port: number, masters: number): Promise<{ name: string; port: number }[]> {
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await client.connect();
    const slots = (await client.call('CLUSTER', 'SLOTS')) as [number, number, [string, number, ...unknown[]]][];
    const owner = (slot: number) => slots.find(([from, to]) => slot >= from && slot <= to)?.[2][1] ?? 0;
    const keys = new KeyLayout(DEFAULT_KEY_PREFIX);
    const perMaster = new Map<number, number>();
    const chosen: { name: string; port: number }[] = [];
    for (let i = 0; chosen.length < POOLS && i < 1000; i++) {
      const name = `scale-${i}`;
      const slot = Number(await client.call('CLUSTER', 'KEYSLOT', keys.cursor(name)));
      const master = owner(slot);
      if ((perMaster.get(master) ?? 0) >= POOLS / masters) continue;
      perMaster.set(master, (perMaster.get(master) ?? 0) + 1);
      chosen.push({ name, port: master });
    }
    return chosen;
  } finally {
    client.disconnect();
  }
}

interface Client {
  child: ChildProcess;
  run(durationMs: number): Promise<Extract<FromStoreClient, { type: 'done' }>>;
}

async function startClient(processes: ProcessSet, name: string, spec: StoreClientSpec): Promise<Client> {
  const child = fork(join(REPO_ROOT, 'loadtest', 'scale', 'store-client-worker.ts'), [JSON.stringify(spec)], {
    cwd: REPO_ROOT,
    execPath: process.execPath,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  processes.adopt(name, child);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} was not ready in ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
    child.once('message', (message: FromStoreClient) => {
      clearTimeout(timer);
      if (message.type === 'ready') resolve();
      else reject(new Error(`${name}: ${message.type === 'failed' ? message.message : message.type}`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code}`));
    });
  });
  let nextId = 1;
  return {
    child,
    run(durationMs) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name}: no answer ${durationMs + 10_000} ms into a run`)), durationMs + 10_000);
        const onMessage = (message: FromStoreClient) => {
          if (message.type === 'failed') {
            clearTimeout(timer);
            child.off('message', onMessage);
            reject(new Error(`${name}: ${message.message}`));
          }
          if (message.type === 'done' && message.id === id) {
            clearTimeout(timer);
            child.off('message', onMessage);
            resolve(message);
          }
        };
        child.on('message', onMessage);
        child.send({ type: 'run', id, durationMs });
      });
    },
  };
}

async function step(topo: Topo, clients: Client[], stepMs: number, round: number): Promise<ClusterStep> {
  const pids = [...topo.nodes.values()];
  const clientPids = clients.map((c) => c.child.pid!);
  const before = { nodes: pids.map(cpuMs), clients: cpuMsOf(clientPids), machine: machineBusyMs(), at: performance.now() };
  const results = await Promise.all(clients.map((c) => c.run(stepMs)));
  const wallMs = performance.now() - before.at;
  const redisCores = Object.fromEntries(
    [...topo.nodes.entries()].map(([port, pid], i) => [String(port), (cpuMs(pid) - before.nodes[i]!) / wallMs]),
  );
  const result: ClusterStep = {
    round,
    topology: topo.topology,
    clients: clients.length,
    pairsPerSecond: (results.reduce((acc, r) => acc + r.pairs, 0) * 1000) / wallMs,
    errors: results.reduce((acc, r) => acc + r.errors, 0),
    refused: results.reduce((acc, r) => acc + r.refused, 0),
    ...(results.find((r) => r.firstError)?.firstError ? { firstError: results.find((r) => r.firstError)!.firstError! } : {}),
    redisCores,
    busiestRedisCores: Math.max(...Object.values(redisCores)),
    clientCores: (cpuMsOf(clientPids) - before.clients) / wallMs,
    machineCores: (machineBusyMs() - before.machine) / wallMs,
  };
  log(
    `  round ${round + 1} ${topo.topology.padEnd(7)} ${clients.length} client(s) ${fmt(result.pairsPerSecond, 0).padStart(6)} pairs/s` +
      `  Redis ${Object.values(redisCores)
        .map((c) => `${fmt(c * 100, 0)} %`)
        .join(' / ')}  clients ${fmt(result.clientCores * 100, 0)} %` +
      `  machine ${fmt(result.machineCores * 100, 0)} %  errors ${result.errors}${result.firstError ? ` (${result.firstError})` : ''}`,
  );
  return result;
}

export async function runClusterPhase(processes: ProcessSet, options: ScaleOptions): Promise<ClusterResult> {
  const dir = makeWorkDir(processes, 'spillway-scale-cluster-');
  const binary = commandPath('redis-server', ['/usr/bin/redis-server']);
  if (!binary) throw new Error('redis-server is not installed: apt-get install -y redis-server');
  const single = await startRedis(processes, dir);
  mkdirSync(join(dir, 'cluster'), { recursive: true });
  const cluster = await startRedisCluster({ binary, dataDir: join(dir, 'cluster'), masters: 3 });
  processes.onCleanup(() => cluster.stop());
  const masters = await cluster.masters();
  const pools = await poolsSpread(masters[0]!.port, masters.length);
  const topos: Topo[] = [
    { topology: 'single', nodes: new Map([[single.port, single.child.pid]]), spec: { redisUrl: single.url } },
    { topology: 'cluster', nodes: new Map(masters.map((m) => [m.port, redisPid(m.port)])), spec: { clusterSeeds: cluster.seeds } },
  ];
  const most = Math.max(...options.clusterClients);
  const clients = new Map<Topology, Client[]>();
  for (const topo of topos) {
    const spec: StoreClientSpec = { ...topo.spec, pools: pools.map((p) => layout(p.name)), concurrency: CONCURRENCY_PER_CLIENT };
    clients.set(
      topo.topology,
      await Promise.all(Array.from({ length: most }, (_, i) => startClient(processes, `store-client-${topo.topology}-${i}`, spec))),
    );
  }
  const steps: ClusterStep[] = [];
  try {
    for (let round = 0; round < options.clusterRounds; round++) {
      for (const topo of round % 2 === 0 ? topos : [...topos].reverse()) {
        for (const count of options.clusterClients)
          steps.push(await step(topo, clients.get(topo.topology)!.slice(0, count), options.clusterStepMs, round));
      }
    }
  } finally {
    for (const list of clients.values()) await Promise.all(list.map((c) => stopChild(c.child, 2000)));
    await cluster.stop();
    await stopChild(single.child.process, 2000);
  }
  return { pools: pools.map((p) => ({ name: p.name, port: { single: single.port, cluster: p.port } })), steps, cores: cpus().length };
}
