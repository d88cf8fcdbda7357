/**
 * The admission benchmark's stack, all on loopback and children of the benchmark: a private
 * redis-server, the simulator (three budgeted deployments and a clock deployment), three gateways
 * sharing the Redis, one pool per phase; and the client that spreads requests over the gateways.
 */
import { cpus } from 'node:os';
import { Agent, createServer, request as httpRequest } from 'node:http';
import type { ProcessSet } from '../../shared/processes/process-set.ts';
import type { SimDeployment } from '../../shared/simulator/types.ts';
import { fmt } from '../lib/format.ts';
import { cpuModel } from '../lib/report-doc.ts';
import {
  gatewayConfig,
  makeWorkDir,
  SIM_KEY,
  startGateway,
  startRedis,
  startSimulatorProcess,
  writeGatewayConfig,
  type GatewayHandle,
  type GatewayPoolInput,
  type SimulatorHandle,
} from '../lib/stack.ts';
import { Client, stopSending } from './client.ts';
import {
  ADMIN_KEY,
  API_VERSION,
  DEPLOYMENT_IDS,
  GATEWAYS,
  loadLabel,
  MAX_IN_FLIGHT,
  poolName,
  REGIONS,
  requestPath,
  type Costs,
  type Settings,
} from './settings.ts';

export interface Stack {
  simulator: SimulatorHandle;
  gateways: GatewayHandle[];
  redisPid: number;
  redisUrl: string;
  client: Client;
}

const log = (line: string) => process.stdout.write(`${line}\n`);

/**
 * Diagnostic (--strip-ratelimit-headers): an in-process proxy to the simulator that drops the
 * x-ratelimit-* headers of its responses, so that the gateways' windows hold only their own bookings.
 */
async function startHeaderStrippingProxy(simulatorUrl: string, processes: ProcessSet): Promise<string> {
  const target = new URL(simulatorUrl);
  const agent = new Agent({ keepAlive: true, maxSockets: MAX_IN_FLIGHT });
  const server = createServer((req, res) => {
    const upstream = httpRequest(
      { agent, hostname: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (response) => {
        const headers = Object.fromEntries(Object.entries(response.headers).filter(([name]) => !name.startsWith('x-ratelimit-')));
        res.writeHead(response.statusCode ?? 502, headers);
        response.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
    res.on('close', () => upstream.destroy());
  });
  await new Promise<void>((resolvePromise) => server.listen(0, '127.0.0.1', resolvePromise));
  processes.onCleanup(() => {
    server.closeAllConnections();
    server.close();
    agent.destroy();
  });
  const address = server.address();
  return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
}

const CLOCK_DEPLOYMENT = 'admission-clock';

/**
 * Where the simulator's bucket edges fall against the gateways' (which are multiples of bucketMs in
 * epoch ms, by the Redis clock, on this same machine). A deployment of 1000 tokens takes one request of
 * exactly 1000, refuses the next one, and tells when the first one's bucket leaves its window:
 * retry-after-ms = ceil(edge - now) + 1. Returns the edge's offset in [0, bucketMs), ±2 ms.
 */
async function measureBucketPhase(simulatorUrl: string, bucketMs: number): Promise<number | undefined> {
  const url = `${simulatorUrl}/openai/deployments/${CLOCK_DEPLOYMENT}/chat/completions?api-version=${API_VERSION}`;
  const send = async () => {
    const sentAt = Date.now();
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': SIM_KEY },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }], max_tokens: 999 }),
      signal: AbortSignal.timeout(5000),
    });
    await response.arrayBuffer();
    return { status: response.status, at: (sentAt + Date.now()) / 2, retryAfterMs: Number(response.headers.get('retry-after-ms')) };
  };
  try {
    const first = await send();
    const second = await send();
    if (first.status !== 200 || second.status !== 429 || !(second.retryAfterMs > 0)) return undefined;
    const edge = second.at + second.retryAfterMs - 1.5;
    return ((edge % bucketMs) + bucketMs) % bucketMs;
  } catch {
    return undefined;
  }
}

export async function adminPools(gateway: GatewayHandle): Promise<unknown> {
  try {
    const response = await fetch(`${gateway.url}/admin/pools`, { headers: { 'api-key': ADMIN_KEY }, signal: AbortSignal.timeout(3000) });
    return await response.json();
  } catch (error) {
    return { error: (error as Error).message };
  }
}

/** Pools of the run: `warmup` (JIT only: without budgets it never refuses), and one per phase. */
function poolsOf(settings: Settings): Record<string, GatewayPoolInput> {
  // The seed's policy: round-robin, no budgets in the config (so it never refuses before trying).
  const roundRobin: GatewayPoolInput = {
    strategy: 'round-robin',
    deployments: DEPLOYMENT_IDS.map((id) => ({ id, deployment: `admission-${id}`, model: 'gpt-4o' })),
  };
  const spillway: GatewayPoolInput = {
    strategy: 'least-requests',
    deployments: roundRobin.deployments.map((d) => ({ ...d, tpm: settings.tpm, rpm: settings.rpm })),
  };
  const pools: Record<string, GatewayPoolInput> = { warmup: roundRobin };
  for (const load of settings.loads) {
    for (const policy of settings.policies) pools[poolName(policy, load)] = policy === 'spillway' ? spillway : roundRobin;
  }
  return pools;
}

function simDeploymentsOf(settings: Settings): SimDeployment[] {
  const simDeployments: SimDeployment[] = DEPLOYMENT_IDS.map((id, index) => ({
    name: `admission-${id}`,
    tpm: settings.tpm,
    rpm: settings.rpm,
    region: REGIONS[index] ?? 'East US',
    completionTokens: settings.maxTokens,
  }));
  // Not behind the gateways: only measureBucketPhase reads the simulator's bucket grid through it.
  simDeployments.push({ name: CLOCK_DEPLOYMENT, tpm: 1000, rpm: 600, latency: { ttftMs: 0, perTokenMs: 0 }, completionTokens: 1 });
  return simDeployments;
}

export async function startAdmissionStack(processes: ProcessSet, settings: Settings): Promise<Stack> {
  const dir = makeWorkDir(processes, 'spillway-admission-');
  const redis = await startRedis(processes, dir);
  const simulator = await startSimulatorProcess(processes, dir, {
    deployments: simDeploymentsOf(settings),
    windowMs: settings.windowMs,
    latency: { ttftMs: settings.ttftMs, perTokenMs: settings.perTokenMs },
    countRejected: true,
  });
  const upstreamUrl = settings.stripRatelimitHeaders ? await startHeaderStrippingProxy(simulator.url, processes) : simulator.url;
  const configFile = writeGatewayConfig(
    dir,
    'gateway',
    gatewayConfig(upstreamUrl, poolsOf(settings), { windowMs: settings.gatewayWindowMs }),
  );
  const { gateways, client } = await startGateways(processes, dir, {
    configFile,
    redisUrl: redis.url,
    count: GATEWAYS,
    adminKey: ADMIN_KEY,
  });
  return { simulator, gateways, redisPid: redis.child.pid, redisUrl: redis.url, client };
}

/**
 * `count` gateways on one config and one Redis, and the client that spreads requests over them (cut
 * and closed on SIGINT/SIGTERM, so an interrupted run ends at once): the admission and background benchmarks'.
 */
export async function startGateways(
  processes: ProcessSet,
  dir: string,
  options: { configFile: string; redisUrl: string; count: number; adminKey: string },
): Promise<{ gateways: GatewayHandle[]; client: Client }> {
  const gateways = await Promise.all(
    Array.from({ length: options.count }, (_, index) =>
      startGateway(processes, dir, {
        name: `gateway-${index + 1}`,
        configFile: options.configFile,
        redisUrl: options.redisUrl,
        logLevel: 'warn',
        env: { ADMIN_API_KEY: options.adminKey },
      }),
    ),
  );
  const client = new Client(gateways.map((g) => g.url));
  const stopClient = () => {
    stopSending();
    client.cutAll();
    client.close();
  };
  process.once('SIGINT', stopClient);
  process.once('SIGTERM', stopClient);
  return { gateways, client };
}

export function logSetup(stack: Stack, settings: Settings, costs: Costs, loadBefore: number[]): void {
  const { gateways, simulator } = stack;
  log(
    `admission benchmark: ${GATEWAYS} gateways [${gateways.map((g) => g.port).join(', ')}] with Redis ${stack.redisUrl}, simulator ${simulator.url}`,
  );
  log(
    `  window ${settings.windowMs} ms${settings.gatewayWindowMs !== settings.windowMs ? ` (gateways: ${settings.gatewayWindowMs} ms)` : ''}; 3 deployments × ${settings.tpm} tokens/window (rpm ${settings.rpm}); request: ${settings.promptChars}-char prompt, max_tokens ${settings.maxTokens}; ` +
      `cost: simulator estimate ${costs.simulatorEstimate}, gateway estimate ${costs.gatewayEstimate}, usage ${costs.usage} tokens`,
  );
  log(
    `  ${settings.stripRatelimitHeaders ? 'DIAGNOSTIC: x-ratelimit-* headers stripped between the gateways and the simulator; ' : ''}capacity ${costs.requestsPerWindowPerDeployment} requests/window/deployment = ${fmt(costs.capacityRps, 1)} requests/s summed; loads ${settings.loads.map(loadLabel).join(', ')}`,
  );
  log(
    `  machine: ${cpus().length} cores (${cpuModel()}), node ${process.version}, load average ${loadBefore.map((v) => v.toFixed(2)).join(' ')}`,
  );
}

/** Smoke and JIT warm-up through every gateway (the pool without budgets). */
export async function warmUp(stack: Stack, body: Buffer): Promise<void> {
  const { client } = stack;
  const warmPath = requestPath('warmup');
  const smoke = await client.post(0, warmPath, body, performance.now());
  if (smoke.status !== 200) throw new Error(`smoke request got ${smoke.status} ${smoke.error ?? ''}`);
  for (let batch = 0; batch < 15; batch++) {
    const answers = await Promise.all(Array.from({ length: 9 }, (_, i) => client.post(i, warmPath, body, performance.now())));
    const bad = answers.find((a) => a.status !== 200);
    if (bad) throw new Error(`warm-up request got ${bad.status} ${bad.error ?? ''}`);
  }
}

/** Where the simulator's bucket grid falls against the gateways'; then a clean simulator for the phases. */
export async function measureBucketGrids(stack: Stack, settings: Settings): Promise<number | undefined> {
  const bucketPhaseMs = await measureBucketPhase(stack.simulator.url, settings.windowMs / 60);
  log(
    `  bucket grids: the simulator's ${settings.windowMs / 60} ms buckets end ${bucketPhaseMs === undefined ? '(not measured)' : `${fmt(bucketPhaseMs, 0)} ms`} after the gateways' (Redis clock); ` +
      "(the two grids are independent, as Azure's and the gateways' are)",
  );
  await stack.simulator.reset();
  return bucketPhaseMs;
}
