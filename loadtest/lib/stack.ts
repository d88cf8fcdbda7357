/**
 * The pieces of a local load run, each a child process on loopback: a private redis-server, the
 * AOAI simulator (shared/simulator/cli.ts), gateway instances (gateway/main.ts with a generated
 * YAML config), nginx as the load balancer, and the load generator.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { configSchema } from '../../shared/config/schema.ts';
import type { DeploymentStats, FaultSpec, SimulatorOptions } from '../../shared/simulator/types.ts';
import { alive, commandPath, freePort, stopChild, waitFor, type Child, type ProcessSet } from '../../shared/processes/process-set.ts';
import type { FromGenerator, RunResult, RunSpec } from './protocol.ts';
import { launchRedis } from '../../shared/processes/redis-server.ts';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SIM_KEY = 'loadtest-upstream-key';
export const CLIENT_KEY = 'loadtest-client-key';
/** Node 24 from the devDependency when this runs under it (npm scripts), else whatever runs us. */
const NODE = process.execPath;

export function makeWorkDir(processes: ProcessSet, prefix = 'spillway-load-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  processes.onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

function deadReason(child: Child, log?: string): () => string | undefined {
  return () =>
    alive(child.process) ? undefined : `exited (${child.process.exitCode ?? child.process.signalCode})${log ? `:\n${tail(log)}` : ''}`;
}

async function httpOk(url: string): Promise<boolean> {
  const response = await fetch(url, { signal: AbortSignal.timeout(1000) });
  await response.arrayBuffer();
  return response.ok;
}

// ---------------------------------------------------------------- redis

export interface RedisHandle {
  url: string;
  port: number;
  /** The running server; restartRedis replaces it. */
  child: Child;
  binary: string;
  dataDir: string;
}

export async function startRedis(processes: ProcessSet, dir: string): Promise<RedisHandle> {
  const binary = commandPath('redis-server', ['/usr/bin/redis-server']);
  if (!binary) throw new Error('redis-server is not installed: apt-get install -y redis-server');
  const dataDir = join(dir, 'redis');
  mkdirSync(dataDir, { recursive: true });
  const { url, port, child } = await launchRedis(binary, dataDir, (args) => processes.spawn('redis', binary, args));
  return { url, port, child, binary, dataDir };
}

/** A new, empty redis-server on the handle's port (the old one must be gone), so that its clients reconnect to it. */
export async function restartRedis(processes: ProcessSet, handle: RedisHandle): Promise<void> {
  const { child } = await launchRedis(handle.binary, handle.dataDir, (args) => processes.spawn('redis', handle.binary, args), handle.port);
  handle.child = child;
}

// ---------------------------------------------------------------- simulator

/** The simulator's control endpoints answer at once; this long means it is stuck. */
const SIM_CONTROL_TIMEOUT_MS = 5000;

export interface SimulatorHandle {
  url: string;
  child: Child;
  stats(): Promise<Record<string, DeploymentStats>>;
  reset(): Promise<void>;
  /** Installs (null: clears) a deployment's fault through the control API. */
  setFault(deployment: string, spec: FaultSpec | null): Promise<void>;
}

export async function startSimulatorProcess(
  processes: ProcessSet,
  dir: string,
  options: Omit<SimulatorOptions, 'apiKeys' | 'port' | 'host'>,
): Promise<SimulatorHandle> {
  const file = join(dir, 'simulator.json');
  writeFileSync(file, JSON.stringify({ ...options, apiKeys: [SIM_KEY], host: '127.0.0.1', port: 0 }, null, 2));
  const child = processes.spawn('simulator', NODE, ['shared/simulator/cli.ts', '--config', file], { cwd: REPO_ROOT });
  let stderr = '';
  child.process.stderr?.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`simulator did not start in 20 s: ${stderr}`)), 20_000);
    const lines = createInterface({ input: child.process.stdout! });
    lines.on('line', (line) => {
      try {
        const info = JSON.parse(line) as { url?: string };
        if (info.url) {
          clearTimeout(timer);
          lines.close();
          child.process.stdout?.resume();
          resolve(info.url);
        }
      } catch {
        // not the banner
      }
    });
    child.process.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`simulator exited with ${code}: ${stderr}`));
    });
  });
  return {
    url,
    child,
    // Bounded: a simulator that stops answering must not hang the run that polls it.
    async stats() {
      const response = await fetch(`${url}/_sim/stats`, { signal: AbortSignal.timeout(SIM_CONTROL_TIMEOUT_MS) });
      return (await response.json()) as Record<string, DeploymentStats>;
    },
    async reset() {
      const response = await fetch(`${url}/_sim/reset`, { method: 'POST', signal: AbortSignal.timeout(SIM_CONTROL_TIMEOUT_MS) });
      await response.arrayBuffer();
    },
    async setFault(deployment, spec) {
      const response = await fetch(`${url}/_sim/faults`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ deployment, fault: spec?.fault ?? null, ...(spec?.count !== undefined ? { count: spec.count } : {}) }),
        signal: AbortSignal.timeout(SIM_CONTROL_TIMEOUT_MS),
      });
      const text = await response.text();
      if (!response.ok) throw new Error(`simulator: setting the fault of ${deployment} got ${response.status}: ${text.slice(0, 200)}`);
    },
  };
}

export function sumStats(all: Record<string, DeploymentStats>): DeploymentStats {
  const total: DeploymentStats = {
    received: 0,
    served: 0,
    throttled: 0,
    failed: 0,
    aborted: 0,
    promptTokens: 0,
    completionTokens: 0,
    inFlight: 0,
    peakConcurrency: 0,
  };
  for (const stats of Object.values(all)) {
    for (const key of Object.keys(total) as (keyof DeploymentStats)[]) total[key] += stats[key];
  }
  return total;
}

// ---------------------------------------------------------------- gateways

export interface GatewayPoolInput {
  strategy?: string;
  deployments: { id: string; deployment: string; tpm?: number; rpm?: number; priority?: number; weight?: number; model?: string }[];
}

/**
 * A gateway config (plain data, validated against the gateway's own schema) pointing at the simulator.
 * `gateway`: optional settings for the config's `gateway:` section (e.g. windowMs in scaled time).
 */
export function gatewayConfig(
  simulatorUrl: string,
  pools: Record<string, GatewayPoolInput>,
  gateway?: Record<string, unknown>,
): Record<string, unknown> {
  // No load balancer to tell: a stopped gateway leaves at once instead of after shutdownDelayMs.
  const config = {
    gateway: { shutdownDelayMs: 0, ...gateway },
    pools: Object.fromEntries(
      Object.entries(pools).map(([name, pool]) => [
        name,
        {
          ...(pool.strategy ? { strategy: pool.strategy } : {}),
          deployments: pool.deployments.map((d) => ({ ...d, endpoint: simulatorUrl, apiKey: SIM_KEY })),
        },
      ]),
    ),
    clients: [{ name: 'loadtest', apiKey: CLIENT_KEY }],
  };
  const parsed = configSchema.safeParse(config);
  if (!parsed.success) throw new Error(`generated gateway config is invalid: ${parsed.error.message}`);
  return config;
}

export interface GatewayHandle {
  name: string;
  url: string;
  port: number;
  child: Child;
  log: string;
}

export interface GatewayOptions {
  name: string;
  configFile: string;
  redisUrl?: string;
  logLevel?: string;
  /** Extra node flags, e.g. --cpu-prof. */
  nodeArgs?: string[];
  /** Extra environment, set after the inherited REDIS_URL and ADMIN_API_KEY are removed (e.g. ADMIN_API_KEY). */
  env?: Record<string, string>;
  /** Script to run instead of gateway/main.ts (the bare Node proxy baseline, another checkout's gateway); it must answer /readyz. */
  script?: string;
  /** Working directory of the process (default: this checkout). */
  cwd?: string;
  /** Listen on this port (a restart where the load balancer expects it); tried once. Default: a free port. */
  port?: number;
}

/** Ports tried per gateway: one can be taken between freePort() and the gateway's listen. */
const GATEWAY_START_ATTEMPTS = 3;

export async function startGateway(processes: ProcessSet, dir: string, options: GatewayOptions): Promise<GatewayHandle> {
  const log = join(dir, `${options.name}.log`);
  const attempts = options.port === undefined ? GATEWAY_START_ATTEMPTS : 1;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const port = options.port ?? (await freePort());
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      GATEWAY_CONFIG: options.configFile,
      LOG_LEVEL: options.logLevel ?? 'warn',
    };
    delete env.REDIS_URL;
    delete env.ADMIN_API_KEY;
    if (options.redisUrl) env.REDIS_URL = options.redisUrl;
    Object.assign(env, options.env);
    const fd = openSync(log, 'a');
    const child = processes.spawn(options.name, NODE, [...(options.nodeArgs ?? []), options.script ?? 'gateway/main.ts'], {
      cwd: options.cwd ?? REPO_ROOT,
      env,
      stdio: ['ignore', fd, fd],
    });
    closeSync(fd);
    try {
      await waitFor(`gateway ${options.name}`, () => httpOk(`http://127.0.0.1:${port}/readyz`), 30_000, deadReason(child, log));
      return { name: options.name, url: `http://127.0.0.1:${port}`, port, child, log };
    } catch (error) {
      await stopChild(child.process, 2000);
      // A port taken between freePort() and listen(): try another one.
      if (attempt < attempts && tail(log, 5).includes('EADDRINUSE')) continue;
      throw error;
    }
  }
  throw new Error(`gateway ${options.name}: no free port after ${attempts} tries`);
}

// ---------------------------------------------------------------- nginx

export interface NginxHandle {
  url: string;
  child: Child;
}

export const NGINX_MISSING =
  'nginx is not installed. On Debian/Ubuntu: apt-get install -y nginx (or nginx-light). It only runs as a child of the load driver, on loopback.';

export function nginxBinary(): string | undefined {
  return commandPath('nginx', ['/usr/sbin/nginx']);
}

/**
 * nginx in the foreground with its own prefix, config, pid and logs in `dir`; upstream = the given ports.
 * With one worker it runs as a single process (master_process off), so the parent-death signal reaches
 * the process that serves; with more, a SIGKILLed orchestrator can leave the workers behind.
 */
export async function startNginx(
  processes: ProcessSet,
  parent: string,
  name: string,
  upstreamPorts: number[],
  workers = 1,
): Promise<NginxHandle> {
  const binary = nginxBinary();
  if (!binary) throw new Error(NGINX_MISSING);
  const dir = join(parent, name);
  mkdirSync(join(dir, 'logs'), { recursive: true });
  const port = await freePort();
  const confFile = join(dir, 'nginx.conf');
  writeFileSync(confFile, nginxConf(dir, port, upstreamPorts, workers));
  const child = processes.spawn(name, binary, ['-p', dir, '-c', confFile, '-e', join(dir, 'logs', 'error.log')]);
  let stderr = '';
  child.process.stderr?.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  child.process.stdout?.resume();
  await waitFor(
    `nginx ${name}`,
    () => httpOk(`http://127.0.0.1:${port}/__lb/health`),
    10_000,
    () => {
      const dead = deadReason(child, join(dir, 'logs', 'error.log'))();
      return dead ? `${dead}\n${stderr}` : undefined;
    },
  );
  return { url: `http://127.0.0.1:${port}`, child };
}

/** nginx's config: upstream keep-alive, no buffering either way, every file in `dir`. */
function nginxConf(dir: string, port: number, upstreamPorts: number[], workers: number): string {
  const servers = upstreamPorts.map((p) => `    server 127.0.0.1:${p} max_fails=0;`).join('\n');
  return `# generated by loadtest/lib/stack.ts
daemon off;
${workers === 1 ? 'master_process off;' : 'master_process on;'}
worker_processes ${workers};
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  client_max_body_size 8m;
  upstream backends {
${servers}
    keepalive 512;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location = /__lb/health { access_log off; return 200 "ok\\n"; }
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
      proxy_send_timeout 300s;
      proxy_next_upstream error timeout;
    }
  }
}
`;
}

// ---------------------------------------------------------------- load generator

export interface Generator {
  child: ChildProcess;
  run(spec: RunSpec, onProgress?: (progress: Extract<FromGenerator, { type: 'progress' }>) => void): Promise<RunResult>;
  stop(): Promise<void>;
}

export async function startGenerator(processes: ProcessSet): Promise<Generator> {
  const script = join(REPO_ROOT, 'loadtest', 'load-generator.ts');
  const child = fork(script, [], { cwd: REPO_ROOT, execPath: NODE, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  processes.adopt('load-generator', child);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('load generator did not start in 10 s')), 10_000);
    child.once('message', (message: FromGenerator) => {
      if (message.type === 'ready') {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`load generator exited with ${code}`));
    });
  });
  let nextId = 1;
  return {
    child,
    run(spec, onProgress) {
      const id = nextId++;
      return new Promise<RunResult>((resolve, reject) => {
        const onMessage = (message: FromGenerator) => {
          if (message.type === 'progress' && message.id === id) onProgress?.(message);
          if (message.type === 'result' && message.id === id) {
            done();
            resolve(message.result);
          }
          if (message.type === 'failed' && message.id === id) {
            done();
            reject(new Error(`load generator: ${message.message}`));
          }
        };
        const onExit = (code: number | null) => {
          done();
          reject(new Error(`load generator exited with ${code} during a run`));
        };
        const done = () => {
          child.off('message', onMessage);
          child.off('exit', onExit);
        };
        child.on('message', onMessage);
        child.once('exit', onExit);
        child.send({ type: 'run', id, spec });
      });
    },
    async stop() {
      if (!alive(child)) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.send({ type: 'stop' });
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Writes a gateway config to the work dir and returns its path. */
export function writeGatewayConfig(dir: string, name: string, config: Record<string, unknown>): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, stringify(config));
  return file;
}
