/**
 * What the stream phases of the scale bench load: Redis, the simulator with a slow (1 token/s) and a
 * fast (20 tokens/s) deployment, and the two proxies in front of it, each a child on loopback: a
 * gateway (Redis store) and the bare Node proxy (loadtest/bare-proxy.ts), each with a way to read its
 * heap and its event-loop delay.
 */
import { readFileSync } from 'node:fs';
import { Agent, get as httpGet } from 'node:http';
import { stopChild, type ProcessSet } from '../../shared/processes/process-set.ts';
import { memoryMb } from '../../shared/processes/proc-stats.ts';
import {
  CLIENT_KEY,
  gatewayConfig,
  makeWorkDir,
  SIM_KEY,
  startGateway,
  startRedis,
  startSimulatorProcess,
  writeGatewayConfig,
  type RedisHandle,
  type SimulatorHandle,
} from '../lib/stack.ts';
import { INSPECT_ARGS, LiveHeap } from './live-heap.ts';
import type { StreamTarget } from './stream-protocol.ts';

const API_VERSION = '2024-10-21';
/** Long enough that no stream ends before the bench closes it. */
const COMPLETION_TOKENS = 100_000;
export const PACES = { slow: 1000, fast: 50 } as const;
export type Pace = keyof typeof PACES;
export type ProxyKind = 'gateway' | 'bare';
export const PROXY_LABELS: Record<ProxyKind, string> = { gateway: 'gateway (Redis store)', bare: 'bare Node proxy' };

/**
 * The gateway's limits raised past what the bench holds, so that the process's open-file limit, not a
 * setting, is what 10 000 streams meet: connections and upstream sockets per origin (2 fds a stream).
 */
const GATEWAY_SETTINGS = { maxConnections: 12_000, upstreamMaxSockets: 12_000, streamIdleTimeoutMs: 120_000, deadlineMs: 120_000 };

export interface ScaleStack {
  dir: string;
  redis: RedisHandle;
  simulator: SimulatorHandle;
  configFile: string;
  processes: ProcessSet;
}

export interface ProxyReading {
  heapUsedMb: number | null;
  /** Event-loop delay beyond the 10 ms sampling interval since the previous reading, ms. */
  lag: { p50: number; p99: number; max: number } | null;
}

export interface Proxy {
  kind: ProxyKind;
  url: string;
  pid: number;
  /** A stream of `tokens` tokens at the pace's deployment, through this proxy. */
  target(pace: Pace, tokens: number): StreamTarget;
  /** Heap and event-loop delay (which starts over at every reading); nulls when it does not answer. */
  read(): Promise<ProxyReading>;
  /** The heap after full collections, MB (started with `inspect`; null otherwise or when it does not answer). */
  liveHeapMb(): Promise<number | null>;
  rssMb(): number;
  /** How the process ended and the end of its log, when it is gone; undefined while it runs. */
  death(): string | undefined;
  stop(): Promise<void>;
}

export function streamBody(tokens: number): string {
  return JSON.stringify({ messages: [{ role: 'user', content: 'Tell me a long story.' }], max_tokens: tokens, stream: true });
}

const chatPath = (deployment: string) => `/openai/deployments/${deployment}/chat/completions?api-version=${API_VERSION}`;

export async function startScaleStack(processes: ProcessSet): Promise<ScaleStack> {
  const dir = makeWorkDir(processes, 'spillway-scale-');
  const redis = await startRedis(processes, dir);
  const simulator = await startSimulatorProcess(processes, dir, {
    deployments: Object.entries(PACES).map(([name, perTokenMs]) => ({
      name,
      completionTokens: COMPLETION_TOKENS,
      latency: { ttftMs: 0, perTokenMs },
    })),
  });
  const pools = Object.fromEntries(Object.keys(PACES).map((name) => [name, { deployments: [{ id: name, deployment: name }] }]));
  const configFile = writeGatewayConfig(dir, 'gateway', gatewayConfig(simulator.url, pools, GATEWAY_SETTINGS));
  return { dir, redis, simulator, configFile, processes };
}

/** The simulator itself: the probes' baseline (no proxy in between). */
export function directTarget(stack: ScaleStack, pace: Pace, tokens: number): StreamTarget {
  return { baseUrl: stack.simulator.url, path: chatPath(pace), apiKey: SIM_KEY, body: streamBody(tokens) };
}

const READING_TIMEOUT_MS = 5000;
const MS = (seconds: string | undefined) => (seconds === undefined ? NaN : Number(seconds) * 1000);

/** The prom-client default metrics the bench reads from the gateway's /metrics. */
export function parseGatewayMetrics(text: string): ProxyReading {
  const value = (name: string) => /^(\S+) (\S+)$/m.exec(text.split('\n').find((line) => line.startsWith(`${name} `)) ?? '')?.[2];
  const heap = Number(value('nodejs_heap_size_used_bytes'));
  const [p50, p99, max] = ['p50', 'p99', 'max'].map((stat) => MS(value(`nodejs_eventloop_lag_${stat}_seconds`)));
  const lag = [p50, p99, max].every((v) => Number.isFinite(v)) ? { p50: p50! - 10, p99: p99! - 10, max: max! - 10 } : null;
  return { heapUsedMb: Number.isFinite(heap) ? heap / 2 ** 20 : null, lag };
}

/**
 * A GET over `agent`'s one kept-alive connection: a reading with N streams open must not need a new
 * connection (and a file descriptor) from a proxy at its open-file limit. fetch would close an idle
 * connection after 4 s; this agent keeps it between the readings of a step.
 */
function getText(url: string, agent: Agent): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpGet(url, { agent, timeout: READING_TIMEOUT_MS }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => (response.statusCode === 200 ? resolve(text) : reject(new Error(`${url}: ${response.statusCode}`))));
      response.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer in ${READING_TIMEOUT_MS} ms`)));
    req.on('error', reject);
  });
}

/** `inspect`: reachable through the inspector, for liveHeapMb. */
export async function startProxy(
  stack: ScaleStack,
  kind: ProxyKind,
  name: string = kind,
  options: { inspect?: boolean } = {},
): Promise<Proxy> {
  const { processes, dir, configFile } = stack;
  const nodeArgs = options.inspect ? INSPECT_ARGS : [];
  const handle =
    kind === 'gateway'
      ? await startGateway(processes, dir, { name, configFile, redisUrl: stack.redis.url, nodeArgs })
      : await startGateway(processes, dir, {
          name,
          configFile,
          nodeArgs,
          script: 'loadtest/bare-proxy.ts',
          env: { UPSTREAM: stack.simulator.url, BARE_PROXY_STATS: '1', MAX_SOCKETS: String(GATEWAY_SETTINGS.upstreamMaxSockets) },
        });
  const pid = handle.child.pid;
  const readings = new Agent({ keepAlive: true, maxSockets: 1 });
  const liveHeap = options.inspect ? await LiveHeap.connect(handle.log) : undefined;
  return {
    kind,
    url: handle.url,
    pid,
    target: (pace, tokens) => ({
      baseUrl: handle.url,
      // The gateway's pool has the deployment's name; the bare proxy passes the simulator's path through.
      path: chatPath(pace),
      apiKey: kind === 'gateway' ? CLIENT_KEY : SIM_KEY,
      body: streamBody(tokens),
    }),
    async read() {
      try {
        if (kind === 'gateway') {
          return parseGatewayMetrics(await getText(`${handle.url}/metrics`, readings));
        }
        const body = JSON.parse(await getText(`${handle.url}/__bare/stats`, readings)) as {
          heapUsed: number;
          eventLoopDelayMs: { p50: number; p99: number; max: number };
        };
        const { p50, p99, max } = body.eventLoopDelayMs;
        return { heapUsedMb: body.heapUsed / 2 ** 20, lag: { p50: p50 - 10, p99: p99 - 10, max: max - 10 } };
      } catch {
        return { heapUsedMb: null, lag: null };
      }
    },
    async liveHeapMb() {
      try {
        return liveHeap ? await liveHeap.usedMb() : null;
      } catch {
        return null;
      }
    },
    rssMb: () => memoryMb(pid).rss,
    death() {
      const { exitCode, signalCode } = handle.child.process;
      if (exitCode === null && signalCode === null) return undefined;
      let tail = '';
      try {
        tail = readFileSync(handle.log, 'utf8').trimEnd().split('\n').slice(-5).join(' | ');
      } catch {
        // no log
      }
      return `exited (${exitCode ?? signalCode})${tail ? `: ${tail.slice(-600)}` : ''}`;
    },
    async stop() {
      readings.destroy();
      liveHeap?.close();
      await stopChild(handle.child.process, 5000);
    },
  };
}
