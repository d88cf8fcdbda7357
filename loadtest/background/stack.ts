/**
 * The background benchmark's stack, all on loopback and children of the benchmark: a private
 * redis-server, the simulator (three budgeted deployments), the upstream tap in front of it, three
 * gateways sharing the Redis (so every instance runs batch lines), one pool per phase; and the
 * admission benchmark's client, which spreads requests over the gateways.
 */
import { cpus } from 'node:os';
import type { ProcessSet } from '../../shared/processes/process-set.ts';
import { configSchema } from '../../shared/config/schema.ts';
import type { SimDeployment } from '../../shared/simulator/types.ts';
import { startGateways, type Stack as AdmissionStack } from '../admission/stack.ts';
import { fmt, pct } from '../lib/format.ts';
import { cpuModel } from '../lib/report-doc.ts';
import {
  CLIENT_KEY,
  gatewayConfig,
  makeWorkDir,
  startRedis,
  startSimulatorProcess,
  writeGatewayConfig,
  type GatewayPoolInput,
} from '../lib/stack.ts';
import { ADMIN_KEY, DEPLOYMENT_IDS, GATEWAYS, phaseOrder, poolName, REGIONS, type Costs, type Settings } from './settings.ts';
import { startUpstreamTap, type UpstreamTap } from './upstream-tap.ts';

/** The admission benchmark's stack (its CPU sampling and warm-up take it), with the tap. */
export interface Stack extends AdmissionStack {
  tap: UpstreamTap;
}

const log = (line: string) => process.stdout.write(`${line}\n`);

/** Pools of the run: `warmup` (no budgets: JIT warm-up only), and one per phase with the deployments' budgets. */
function poolsOf(settings: Settings): Record<string, GatewayPoolInput> {
  const deployments = DEPLOYMENT_IDS.map((id) => ({ id, deployment: `background-${id}`, model: 'gpt-4o' }));
  const budgeted: GatewayPoolInput = {
    strategy: 'least-requests',
    deployments: deployments.map((d) => ({ ...d, tpm: settings.tpm, rpm: settings.rpm })),
  };
  const pools: Record<string, GatewayPoolInput> = { warmup: { strategy: 'round-robin', deployments } };
  for (const { kind, round } of phaseOrder(settings, true)) pools[poolName(kind, round)] = budgeted;
  return pools;
}

/** The gateways' config: lib/stack.ts's, with the lane's settings; validated again by the gateway's schema. */
function benchConfig(upstreamUrl: string, settings: Settings): Record<string, unknown> {
  const config = gatewayConfig(upstreamUrl, poolsOf(settings), { windowMs: settings.windowMs });
  const withLane = {
    ...config,
    background: { reserve: settings.reserve, concurrency: settings.concurrency, poolConcurrency: settings.poolConcurrency },
  };
  const parsed = configSchema.safeParse(withLane);
  if (!parsed.success) throw new Error(`generated gateway config is invalid: ${parsed.error.message}`);
  return withLane;
}

function simDeploymentsOf(settings: Settings): SimDeployment[] {
  return DEPLOYMENT_IDS.map((id, index) => ({
    name: `background-${id}`,
    tpm: settings.tpm,
    rpm: settings.rpm,
    region: REGIONS[index] ?? 'East US',
    // Every request generates all its max_tokens (capped by them): usage ≈ the arrival estimate.
    completionTokens: Math.max(settings.maxTokens, settings.lineMaxTokens),
  }));
}

export async function startBackgroundStack(processes: ProcessSet, settings: Settings): Promise<Stack> {
  const dir = makeWorkDir(processes, 'spillway-background-');
  const redis = await startRedis(processes, dir);
  const simulator = await startSimulatorProcess(processes, dir, {
    deployments: simDeploymentsOf(settings),
    windowMs: settings.windowMs,
    latency: { ttftMs: settings.ttftMs, perTokenMs: settings.perTokenMs },
    countRejected: true,
  });
  const tap = await startUpstreamTap(simulator.url, processes, 1000);
  const configFile = writeGatewayConfig(dir, 'gateway', benchConfig(tap.url, settings));
  const { gateways, client } = await startGateways(processes, dir, {
    configFile,
    redisUrl: redis.url,
    count: GATEWAYS,
    adminKey: ADMIN_KEY,
  });
  return { simulator, gateways, redisPid: redis.child.pid, redisUrl: redis.url, client, tap };
}

/** Whether the gateways serve the Batch API (the lane is wired): a list of batches answers 200. */
export async function batchApiStatus(stack: Stack): Promise<{ available: boolean; detail: string }> {
  try {
    const response = await fetch(`${stack.gateways[0]!.url}/openai/v1/batches?limit=1`, {
      headers: { authorization: `Bearer ${CLIENT_KEY}` },
      signal: AbortSignal.timeout(5000),
    });
    const text = await response.text();
    return { available: response.status === 200, detail: `GET /openai/v1/batches: ${response.status} ${text.slice(0, 200)}` };
  } catch (error) {
    return { available: false, detail: `GET /openai/v1/batches: ${(error as Error).message}` };
  }
}

export function logSetup(stack: Stack, settings: Settings, costs: Costs, loadBefore: number[]): void {
  const { gateways, simulator } = stack;
  const { interactive, line } = costs;
  log(
    `background benchmark: ${GATEWAYS} gateways [${gateways.map((g) => g.port).join(', ')}] with Redis ${stack.redisUrl}, simulator ${simulator.url} behind the tap ${stack.tap.url}`,
  );
  log(
    `  window ${settings.windowMs} ms; 3 deployments × ${settings.tpm} tokens/window (rpm ${settings.rpm}); latency ${settings.ttftMs} ms + ${settings.perTokenMs} ms/token; ` +
      `capacity ${fmt(costs.capacityTokensPerSecond, 0)} tokens/s`,
  );
  log(
    `  interactive: ${settings.promptChars}-char prompt, max_tokens ${settings.maxTokens} (estimate ${interactive.simulatorEstimate} simulator / ${interactive.gatewayEstimate} gateway, usage ${interactive.usage}); ` +
      `${pct(settings.load, 0)} of ${fmt(costs.capacityRps, 1)} requests/s = ${fmt(costs.interactiveRps, 1)} requests/s`,
  );
  log(
    `  batch: ${settings.lines} lines of ${settings.linePromptChars}-char prompt, max_tokens ${settings.lineMaxTokens} (estimate ${line.simulatorEstimate} / ${line.gatewayEstimate}, usage ${line.usage}); ` +
      `reserve ${pct(settings.reserve, 0)}, concurrency ${settings.concurrency} per instance, ${settings.poolConcurrency} per pool; ideal as planned ${fmt(costs.plannedIdealSeconds, 1)} s`,
  );
  log(
    `  machine: ${cpus().length} cores (${cpuModel()}), node ${process.version}, load average ${loadBefore.map((v) => v.toFixed(2)).join(' ')}`,
  );
}
