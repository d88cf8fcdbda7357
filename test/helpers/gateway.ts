/**
 * Starts gateway instances for tests: in process on port 0 (several may share one Redis), or as a
 * real child process (`node gateway/main.ts`) when a test must kill one with SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import { configSchema, type GatewayConfig } from '../../shared/config/schema.ts';
import { createStore } from '../../shared/store/index.ts';
import type { RedisTarget } from '../../shared/store/redis-target.ts';
import type { Store } from '../../shared/store/types.ts';
import { createGateway, type Gateway } from '../../gateway/app.ts';
import { createLogger } from '../../gateway/logger.ts';
import { admissionWindowMs } from '../../gateway/routing/window.ts';

export const UPSTREAM_KEY = 'upstream-test-key';
export const CLIENT_KEY = 'client-test-key';

export interface DeploymentInput {
  id: string;
  endpoint: string;
  deployment?: string;
  apiKey?: string;
  tpm?: number;
  rpm?: number;
  priority?: number;
  weight?: number;
  apiVersion?: string;
  model?: string;
}

/** A validated config from plain objects; deployments default to the simulator's key and own name. */
export function testConfig(input: {
  pools: Record<string, { strategy?: string; deployments: DeploymentInput[]; [key: string]: unknown }>;
  gateway?: Record<string, unknown>;
  clients?: { name: string; apiKey: string; tpm?: number; rpm?: number }[] | null;
  background?: Record<string, unknown>;
}): GatewayConfig {
  const pools = Object.fromEntries(
    Object.entries(input.pools).map(([name, pool]) => [
      name,
      // Slow start off unless a test turns it on: most tests want a recovered deployment back at once.
      { slowStartMs: 0, ...pool, deployments: pool.deployments.map((d) => ({ deployment: d.id, apiKey: UPSTREAM_KEY, ...d })) },
    ]),
  );
  const clients = input.clients === null ? undefined : (input.clients ?? [{ name: 'tests', apiKey: CLIENT_KEY }]);
  // No load balancer to tell in tests: a stopped gateway leaves at once unless a test sets the delay.
  // The cluster-wide prober would close other tests' open circuits early: it runs only where a test asks for it.
  const background = { probeIntervalMs: 600_000, ...input.background };
  return configSchema.parse({ gateway: { shutdownDelayMs: 0, ...input.gateway }, pools, background, ...(clients ? { clients } : {}) });
}

export interface RunningGateway {
  url: string;
  gateway: Gateway;
  store: Store;
  close(): Promise<void>;
}

/**
 * One in-process instance against the test run's Redis (or the memory store with `memory: true`), its
 * Batch API and lane included (not with `memory`: the Batch routes answer 503 then). Instances that
 * share a `backgroundPrefix` share their lane (its queues); the store's default prefix when absent.
 */
export async function startGateway(
  config: GatewayConfig,
  /** `redis`: another Redis than the test run's (a Redis Cluster: test/helpers/redis-cluster.ts). */
  options: { memory?: boolean; adminApiKey?: string; keyPrefix?: string; backgroundPrefix?: string; redis?: RedisTarget } = {},
): Promise<RunningGateway> {
  const redis: RedisTarget | undefined = options.memory
    ? undefined
    : (options.redis ?? (process.env.REDIS_URL ? { kind: 'single', url: process.env.REDIS_URL } : undefined));
  const store = createStore({
    redis,
    keyPrefix: options.keyPrefix,
    windowMs: admissionWindowMs(config.gateway.windowMs),
  });
  const logger = createLogger('error', process.env.SPILLWAY_TEST_LOGS !== '1');
  const gateway = createGateway({
    config,
    store,
    logger,
    adminApiKey: options.adminApiKey,
    redis,
    backgroundPrefix: options.backgroundPrefix,
  });
  const { url } = await gateway.listen(0);
  return {
    url,
    gateway,
    store,
    async close() {
      await gateway.close();
      await store.close();
    },
  };
}

export interface GatewayProcess {
  url: string;
  child: ChildProcess;
  /** Its GATEWAY_CONFIG: write another config there and send SIGHUP (or POST /admin/reload) to reload. */
  file: string;
  /** Every JSON log line the process wrote so far. */
  logs: Record<string, unknown>[];
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** A real `node gateway/main.ts` process with the config written to a temporary file. */
export async function spawnGateway(config: GatewayConfig, env: Record<string, string> = {}): Promise<GatewayProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'spillway-gw-'));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, stringify(config));
  const child = spawn(process.execPath, ['gateway/main.ts'], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', GATEWAY_CONFIG: file, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      // Not left running: its stdout would keep the test file's process alive.
      child.kill('SIGKILL');
      reject(new Error(`gateway did not start in 10 s: ${stderr}`));
    }, 10_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry.message === 'gateway listening') {
          clearTimeout(timer);
          resolve(String(entry.url));
        }
      } catch {
        // not a log line
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited with ${code}: ${stderr}`));
    });
  });
  return {
    url,
    child,
    file,
    logs,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill(signal);
      await exited;
    },
  };
}
