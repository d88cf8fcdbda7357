/**
 * What the bench loads: the simulator, and in front of it each target (nginx, the bare Node proxy,
 * gateways from this checkout or from --compare-with's), all children of the bench on loopback.
 */
import { join } from 'node:path';
import type { ProcessSet } from '../../shared/processes/process-set.ts';
import { childPids } from '../../shared/processes/proc-stats.ts';
import type { PreparedRequest } from '../lib/protocol.ts';
import { promptText } from '../lib/scenario.ts';
import {
  CLIENT_KEY,
  gatewayConfig,
  makeWorkDir,
  SIM_KEY,
  startGateway,
  startGenerator,
  startNginx,
  startRedis,
  startSimulatorProcess,
  writeGatewayConfig,
  type Generator,
  type RedisHandle,
  type SimulatorHandle,
} from '../lib/stack.ts';
import type { BenchOptions, TargetKey } from './options.ts';

const API_VERSION = '2024-10-21';
/** One smoke request may take this long (the targets answer in milliseconds once they are up). */
const SMOKE_TIMEOUT_MS = 10_000;
const DEPLOYMENTS = ['bench-0', 'bench-1', 'bench-2'];
const SIM_PATH = `/openai/deployments/${DEPLOYMENTS[0]}`;
/** The gateways' pool of the three deployments. */
export const POOL_PATH = '/openai/deployments/bench';

export interface Target {
  key: TargetKey;
  url: string;
  apiKey: string;
  /** Path prefix: the simulator's deployment or the gateway's pool. */
  deploymentPath: string;
  gatewayPids: number[];
  nginxPids: number[];
  usesRedis: boolean;
}

export interface BenchStack {
  dir: string;
  redis: RedisHandle | undefined;
  simulator: SimulatorHandle;
  configFile: string;
  targets: Target[];
  generator: Generator;
  /** Every process of the bench: what is not among them is the machine's noise ("foreign"). */
  ourPids(): number[];
}

const chatBody = JSON.stringify({ messages: [{ role: 'user', content: promptText(400) }], max_tokens: 16 });
const streamBody = JSON.stringify({
  messages: [{ role: 'user', content: promptText(400) }],
  max_tokens: 5,
  stream: true,
  stream_options: { include_usage: true },
});

/** The one request of every run: a chat completion, or a short stream. */
export function benchRequest(target: Target, stream: boolean): PreparedRequest {
  return {
    name: stream ? 'chat-stream' : 'chat',
    path: `${target.deploymentPath}/chat/completions?api-version=${API_VERSION}`,
    body: stream ? streamBody : chatBody,
    stream,
    weight: 1,
  };
}

/** Redis (when a target or the profiled gateway uses it), the simulator, every target, the load generator. */
export async function startBenchStack(processes: ProcessSet, options: BenchOptions): Promise<BenchStack> {
  const dir = makeWorkDir(processes, 'spillway-bench-');
  const needsRedis =
    options.keys.some((k) => k.includes('redis') || k === 'stack-floor') || (options.profile && options.profileStore === 'redis');
  const redis = needsRedis ? await startRedis(processes, dir) : undefined;
  const simulator = await startSimulatorProcess(processes, dir, {
    deployments: DEPLOYMENTS.map((name) => ({ name, completionTokens: 16 })),
    latency: { ttftMs: 0, perTokenMs: 0 },
  });
  const configFile = writeGatewayConfig(
    dir,
    'gateway',
    gatewayConfig(simulator.url, {
      bench: { strategy: 'least-requests', deployments: DEPLOYMENTS.map((name, index) => ({ id: `d${index}`, deployment: name })) },
    }),
  );
  const context: StartContext = { processes, dir, options, redis, simulator, configFile };
  const targets: Target[] = [];
  for (const key of options.keys) targets.push(await startTarget(key, context));
  const generator = await startGenerator(processes);
  const ourPids = () => [
    ...new Set([
      process.pid,
      simulator.child.pid,
      generator.child.pid!,
      ...(redis ? [redis.child.pid] : []),
      ...targets.flatMap((t) => [...t.gatewayPids, ...t.nginxPids]),
    ]),
  ];
  return { dir, redis, simulator, configFile, targets, generator, ourPids };
}

interface StartContext {
  processes: ProcessSet;
  dir: string;
  options: BenchOptions;
  redis: RedisHandle | undefined;
  simulator: SimulatorHandle;
  configFile: string;
}

const nginxPids = (pid: number) => [pid, ...childPids(pid)];

async function startTarget(key: TargetKey, context: StartContext): Promise<Target> {
  const { processes, dir, options, simulator } = context;
  const upstream = { apiKey: SIM_KEY, deploymentPath: SIM_PATH, gatewayPids: [], nginxPids: [], usesRedis: false };
  switch (key) {
    case 'direct':
      return { key, url: simulator.url, ...upstream };
    case 'nginx': {
      const lb = await startNginx(processes, dir, 'nginx-sim', [Number(new URL(simulator.url).port)], options.nginxWorkers);
      return { key, url: lb.url, ...upstream, nginxPids: nginxPids(lb.child.pid) };
    }
    case 'node-proxy': {
      const bare = await startGateway(processes, dir, {
        name: key,
        configFile: context.configFile,
        script: 'loadtest/bare-proxy.ts',
        env: { UPSTREAM: simulator.url },
      });
      return { key, url: bare.url, ...upstream, gatewayPids: [bare.child.pid] };
    }
    case 'stack-floor': {
      // A Redis database of its own: its lease set is none of the gateways' keys.
      const floor = await startGateway(processes, dir, {
        name: key,
        configFile: context.configFile,
        script: 'loadtest/stack-floor.ts',
        env: { UPSTREAM: simulator.url, REDIS_URL: `${context.redis!.url}/2` },
      });
      return { key, url: floor.url, ...upstream, gatewayPids: [floor.child.pid], usesRedis: true };
    }
    case 'gw3-redis':
      return startThreeGateways(context);
    default:
      return startOneGateway(key, context);
  }
}

/** gw1-mem, gw1-redis, gw1-redis-info, and the same from --compare-with's checkout. */
async function startOneGateway(key: TargetKey, context: StartContext): Promise<Target> {
  const { redis, options } = context;
  const before = key.endsWith('@before');
  const usesRedis = key.startsWith('gw1-redis');
  // The other checkout gets a Redis database of its own: its key layout may differ from this one's.
  const redisUrl = `${redis?.url}${before ? '/1' : ''}`;
  const gw = await startGateway(context.processes, context.dir, {
    name: key.replace('@', '-'),
    configFile: context.configFile,
    ...(usesRedis ? { redisUrl } : {}),
    logLevel: key === 'gw1-redis-info' ? 'info' : 'warn',
    ...(before && options.compareWith ? { script: join(options.compareWith, 'gateway', 'main.ts'), cwd: options.compareWith } : {}),
  });
  return { key, url: gw.url, apiKey: CLIENT_KEY, deploymentPath: POOL_PATH, gatewayPids: [gw.child.pid], nginxPids: [], usesRedis };
}

async function startThreeGateways(context: StartContext): Promise<Target> {
  const { processes, dir, configFile } = context;
  const three = await Promise.all(
    [1, 2, 3].map((n) => startGateway(processes, dir, { name: `gw3-${n}`, configFile, redisUrl: context.redis!.url, logLevel: 'warn' })),
  );
  const lb = await startNginx(
    processes,
    dir,
    'nginx-gw3',
    three.map((g) => g.port),
    context.options.nginxWorkers,
  );
  return {
    key: 'gw3-redis',
    url: lb.url,
    apiKey: CLIENT_KEY,
    deploymentPath: POOL_PATH,
    gatewayPids: three.map((g) => g.child.pid),
    nginxPids: nginxPids(lb.child.pid),
    usesRedis: true,
  };
}

/** Every target answers 200 for both kinds of request. */
export async function smokeTest(targets: Target[]): Promise<void> {
  for (const target of targets) {
    for (const stream of [false, true]) {
      const r = benchRequest(target, stream);
      const response = await fetch(`${target.url}${r.path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'api-key': target.apiKey },
        body: r.body,
        // A target that does not answer fails the smoke, not the hard cap.
        signal: AbortSignal.timeout(SMOKE_TIMEOUT_MS),
      });
      const text = await response.text();
      if (response.status !== 200) throw new Error(`${target.key}: smoke request got ${response.status}: ${text.slice(0, 200)}`);
    }
  }
}
