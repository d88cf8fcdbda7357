/**
 * Admission benchmark: does token-aware admission keep the promises of README "Admission"?
 *
 *   npm run bench:admission [-- --windows 3 --probes 5 --no-doc]
 *
 * One run starts, all on loopback and as children of this process (loadtest/lib/stack.ts): a private
 * redis-server, the AOAI simulator with three Standard deployments whose token budgets are enforced
 * as Azure enforces them (arrival estimate, sliding window, rejected requests counted), and three
 * gateway processes sharing the Redis. The same offered load (a constant arrival rate, or Poisson
 * with --arrivals poisson) then runs against two policies, each in its own pool (its own Redis key
 * space), with the simulator reset between phases:
 *
 *   spillway   least-requests, the deployments' tpm/rpm in the gateway config: admission
 *   baseline   round-robin, no budgets in the config: only the cooldown after a 429 and failover
 *              (the seed's policy); maxAttempts 3 in both
 *
 * at 90 % and at 150 % of the deployments' summed capacity. Each phase is one warm-up window (not in
 * the figures; at the phase's load but at most 100 %, so that the measured part starts from a full and
 * evenly spread window: a step from nothing to 150 % leaves a burst-and-gap pattern that repeats every
 * window and makes the served share depend on where the measurement starts) and N measured windows.
 * The client spreads requests over the three gateways and, on a 429 that names a retry time, honours
 * it once: it re-sends the same request after exactly retry-after-ms, if that is still within the
 * phase. After each 150 % phase an "honesty probe" fills the pool again with a burst, sends one
 * request once the burst is decided, honours the retry time it is told with nothing else arriving,
 * and checks that the retry gets 200 at the first deployment tried.
 *
 * Ground truth for the gateways' own view: /admin/pools (ADMIN_API_KEY) is sampled every 500 ms and
 * compared with what the simulator counts (the upstream calls of the last window). Diagnostics:
 * --gateway-window-ms, --strip-ratelimit-headers, --keep-logs (see --help and docs/admission.md).
 *
 * Time is scaled: the simulator's and the gateway's window ("minute") is --window-ms (default 6 s),
 * so a budget of T tokens per window stands for T tokens per minute.
 *
 * Prints the tables, writes loadtest/results/admission-<date>.json and (unless --no-doc) the results
 * section of docs/admission.md. Exit code 99 when a spillway target fails, 2 on a setup failure.
 * The client runs in this process: at these rates (under 200 requests/s) it is idle most of the time,
 * and its schedule lag is reported so that a saturated machine shows.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { Agent, createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { header } from '../gateway/retry-after.ts';
import { cpuModel, gitRevision, writeDocSection } from './lib/report-doc.ts';
import { countPromptTokens, estimateCost, parseRequest } from '../shared/simulator/requests.ts';
import type { DeploymentStats, SimDeployment } from '../shared/simulator/types.ts';
import { estimateRequest } from '../shared/tokens/index.ts';
import { fmt, markdownTable, pct, textTable } from './lib/format.ts';
import { loopbackUrl, sendOnce, type Ending } from './lib/http-client.ts';
import { cpuMs, cpuMsOf, machineBusyMs, ProcessSet } from './lib/processes.ts';
import { prng } from './lib/random.ts';
import { promptText } from './lib/scenario.ts';
import { summarize, type Summary } from './lib/stats.ts';
import {
  CLIENT_KEY,
  gatewayConfig,
  SIM_KEY,
  makeWorkDir,
  REPO_ROOT,
  startGateway,
  startRedis,
  startSimulatorProcess,
  sumStats,
  writeGatewayConfig,
  type GatewayHandle,
  type GatewayPoolInput,
  type SimulatorHandle,
} from './lib/stack.ts';

const HELP = `Admission benchmark: spillway admission against the seed's policy, at 90 % and 150 % of capacity

  npm run bench:admission [-- options]

  --window-ms N        the scaled "minute" of the simulator and the gateways (default 6000; multiple of 60)
  --gateway-window-ms N  diagnostic: give the gateways a different window than the simulator (default: --window-ms)
  --tpm N              token budget of each of the 3 deployments per window (default 27000)
  --rpm N              request budget of each deployment per window (default 1200: generous, tokens bind)
  --prompt-chars N     prompt length in characters (default 100)
  --max-tokens N       max_tokens of every request; the simulator generates exactly that many (default 200)
  --ttft-ms N          simulator latency: time to first token (default 30)
  --per-token-ms N     simulator latency per generated token (default 1)
  --loads LIST         offered loads as fractions of the summed capacity (default 0.9,1.5)
  --policies LIST      spillway,baseline (default both)
  --warmup-windows N   windows of load before the measured part of each phase (default 1)
  --warmup-load F      load of those windows (default: the phase's load, at most 1: the window is full and
                       evenly spread when the measured part begins)
  --windows N          measured windows per phase (default 3)
  --arrivals KIND      constant (default) or poisson (seeded)
  --probes N           honesty probes after each overload phase (default 5; 0 = none)
  --seed N             seed of Poisson arrivals (default 1)
  --no-doc             do not rewrite the results section of docs/admission.md
  --json FILE          also write the result here (always written to loadtest/results/)
  --strip-ratelimit-headers  diagnostic: the gateways reach the simulator through a proxy that drops its
                       x-ratelimit-* headers (so the gateways cannot learn from them)
  --keep-logs          copy the gateways' logs (LOG_LEVEL=warn: cooldowns, failed attempts) to loadtest/results/
  --help               this text

Exit codes: 0 the spillway targets passed, 99 one failed, 2 setup or run failure.
`;

const API_VERSION = '2024-10-21';
const DEPLOYMENT_IDS = ['a', 'b', 'c'] as const;
const REGIONS = ['East US', 'Sweden Central', 'Japan East'];
const GATEWAYS = 3;
const ADMIN_KEY = 'admission-bench-admin-key';
/** One request may take this long before it is cut (the simulator answers within ~0.3 s). */
const REQUEST_TIMEOUT_MS = 15_000;
/** After the phase ends, requests in flight get this long to finish; then they are cut. */
const DRAIN_MS = 10_000;
/** Requests in flight at once (HTTP, both attempts); arrivals beyond it are dropped and counted as errors. */
const MAX_IN_FLIGHT = 1000;
/** Bound on arrivals of one phase. */
const MAX_ARRIVALS_PER_PHASE = 50_000;
/** Bursts sent at most to fill the pool before one probe. */
const PROBE_FILL_BATCHES = 10;
/** Bound on one honesty probe series. */
const PROBE_SERIES_CAP_MS = 40_000;

type Policy = 'spillway' | 'baseline';
const POLICY_LABEL: Record<Policy, string> = { spillway: 'spillway', baseline: 'baseline (seed)' };

interface Settings {
  windowMs: number;
  /** The gateways' gateway.windowMs; equal to windowMs unless a diagnostic run sets it. */
  gatewayWindowMs: number;
  tpm: number;
  rpm: number;
  promptChars: number;
  maxTokens: number;
  ttftMs: number;
  perTokenMs: number;
  loads: number[];
  policies: Policy[];
  warmupWindows: number;
  /** Load of the warm-up windows as a fraction of capacity; undefined: min(phase load, 1). */
  warmupLoad: number | undefined;
  windows: number;
  /** Diagnostic: a proxy between the gateways and the simulator drops x-ratelimit-* response headers. */
  stripRatelimitHeaders: boolean;
  arrivals: 'constant' | 'poisson';
  probes: number;
  seed: number;
}

/** The three views of one request's cost, and what capacity follows from them. */
interface Costs {
  /** The simulator's (Azure's) arrival estimate: ceil(prompt chars / 4) + max_tokens. */
  simulatorEstimate: number;
  /** The gateway's arrival estimate: tokenizer count with chat rules + max_tokens. */
  gatewayEstimate: number;
  /** What the simulator reports in usage (prompt_tokens + completion_tokens). */
  usage: number;
  /** Requests one deployment admits per window: floor(tpm / simulatorEstimate). */
  requestsPerWindowPerDeployment: number;
  /** Summed capacity in requests per second. */
  capacityRps: number;
}

// ---------------------------------------------------------------- HTTP client

interface Answer {
  /** ms since the phase (or probe series) start when the request was written. */
  sentAt: number;
  /** HTTP status; 0 for a transport error, a timeout or a cut request (`error` says which). */
  status: number;
  error?: string;
  latencyMs: number;
  /** retry-after-ms, else retry-after × 1000; undefined when the response names no retry time. */
  retryAfterMs?: number;
  /** x-gateway-attempts: upstream tries the gateway made (absent on a 429 without any: 0). */
  gatewayAttempts: number;
  deployment?: string;
}

function retryAfterOf(headers: IncomingHttpHeaders): number | undefined {
  const ms = Number(header(headers, 'retry-after-ms'));
  if (Number.isFinite(ms) && ms > 0) return ms;
  const seconds = Number(header(headers, 'retry-after'));
  if (Number.isFinite(seconds) && seconds > 0) return seconds * 1000;
  return undefined;
}

/** The answer a request ended with: the figures of its head when there is one, none for a failure without a head. */
function answerOf(ending: Ending): Omit<Answer, 'sentAt' | 'latencyMs'> {
  const { status, headers, error } = ending;
  const retryAfterMs = headers ? retryAfterOf(headers) : undefined;
  const deployment = headers ? header(headers, 'x-gateway-deployment') : undefined;
  return {
    status,
    ...(error !== undefined ? { error } : {}),
    gatewayAttempts: headers ? Number(header(headers, 'x-gateway-attempts') ?? 0) || 0 : 0,
    ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
    ...(deployment !== undefined ? { deployment } : {}),
  };
}

/** node:http with one keep-alive agent per gateway; every live request can be cut at once. */
class Client {
  private readonly targets: { url: URL; agent: Agent }[];
  private readonly live = new Set<() => void>();

  constructor(urls: string[]) {
    this.targets = urls.map((url) => ({
      url: loopbackUrl(url),
      agent: new Agent({ keepAlive: true, maxSockets: MAX_IN_FLIGHT, scheduling: 'lifo' }),
    }));
  }

  get count(): number {
    return this.targets.length;
  }

  get inFlight(): number {
    return this.live.size;
  }

  /**
   * POSTs `body` to gateway `index`; resolves when the response ended (never rejects). `onHeaders`
   * is called once: with the status when the answer's head arrives, with 0 when the request ends without one.
   */
  post(index: number, path: string, body: Buffer, t0: number, onHeaders?: (status: number) => void): Promise<Answer> {
    const target = this.targets[index % this.targets.length]!;
    if (aborting) return Promise.resolve({ sentAt: performance.now() - t0, status: 0, error: 'aborted', latencyMs: 0, gatewayAttempts: 0 });
    let told = false;
    const tell = (status: number) => {
      if (told) return;
      told = true;
      onHeaders?.(status);
    };
    return new Promise<Answer>((resolvePromise) => {
      const start = performance.now();
      const cut = sendOnce(
        {
          agent: target.agent,
          hostname: target.url.hostname,
          port: target.url.port,
          method: 'POST',
          path,
          headers: { 'content-type': 'application/json', 'content-length': String(body.length), 'api-key': CLIENT_KEY },
        },
        body,
        REQUEST_TIMEOUT_MS,
        (res) => {
          tell(res.statusCode ?? 0);
          res.resume();
        },
        (ending) => {
          this.live.delete(cut);
          tell(0);
          resolvePromise({ ...answerOf(ending), sentAt: start - t0, latencyMs: performance.now() - start });
        },
      );
      this.live.add(cut);
    });
  }

  cutAll(): number {
    const count = this.live.size;
    for (const cut of [...this.live]) cut();
    return count;
  }

  close(): void {
    for (const { agent } of this.targets) agent.destroy();
  }
}

/** Set on SIGINT/SIGTERM: no new request leaves, so that the gateways can stop at once. */
let aborting = false;

/**
 * Waits until performance.now() reaches `target`: timers may fire up to a millisecond early (libuv's
 * cached loop time), and an honoured retry must not leave before the time it was told.
 */
async function sleepUntil(target: number): Promise<void> {
  for (let step = 0; step < 1000 && performance.now() < target; step++) await sleep(Math.max(1, target - performance.now()));
}

/** `work`'s value, or `fallback` once `ms` have passed (`work` goes on: cut it to stop it). */
function within<T, F>(work: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<F>((resolvePromise) => {
    timer = setTimeout(resolvePromise, Math.max(0, ms), fallback);
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

/**
 * Arrival offsets (ms) over [0, totalMs): `warmupRate` per second before warmupMs, `rate` after it;
 * evenly spaced, or a Poisson process.
 */
function arrivalSchedule(
  warmupRate: number,
  warmupMs: number,
  rate: number,
  totalMs: number,
  kind: Settings['arrivals'],
  seed: number,
): number[] {
  const out: number[] = [];
  const random = prng(seed);
  const gap = (perSecond: number) => (kind === 'constant' ? 1000 / perSecond : (-Math.log(1 - random()) * 1000) / perSecond);
  let at = kind === 'constant' ? 0 : gap(warmupRate);
  while (at < warmupMs && out.length < MAX_ARRIVALS_PER_PHASE) {
    out.push(at);
    at += gap(warmupRate);
  }
  at = warmupMs + (kind === 'constant' ? 0 : gap(rate));
  while (at < totalMs && out.length < MAX_ARRIVALS_PER_PHASE) {
    out.push(at);
    at += gap(rate);
  }
  return out;
}

// ---------------------------------------------------------------- the stack

interface Stack {
  simulator: SimulatorHandle;
  gateways: GatewayHandle[];
  redisPid: number;
  client: Client;
}

function poolName(policy: Policy, load: number): string {
  return `${policy}-${Math.round(load * 100)}`;
}

function requestPath(pool: string): string {
  return `/openai/deployments/${encodeURIComponent(pool)}/chat/completions?api-version=${API_VERSION}`;
}

interface CpuSnapshot {
  gateways: number;
  simulator: number;
  redis: number;
  self: number;
  machine: number;
  at: number;
}

function cpuSnapshot(stack: Stack): CpuSnapshot {
  const self = process.cpuUsage();
  return {
    gateways: cpuMsOf(stack.gateways.map((g) => g.child.pid)),
    simulator: cpuMs(stack.simulator.child.pid),
    redis: cpuMs(stack.redisPid),
    self: (self.user + self.system) / 1000,
    machine: machineBusyMs(),
    at: performance.now(),
  };
}

/** CPU in cores over an interval: each of ours, and the rest of the machine ("foreign"). */
function coresBetween(a: CpuSnapshot, b: CpuSnapshot) {
  const wall = Math.max(1, b.at - a.at);
  const ours = b.gateways - a.gateways + (b.simulator - a.simulator) + (b.redis - a.redis) + (b.self - a.self);
  return {
    gateways: (b.gateways - a.gateways) / wall,
    simulator: (b.simulator - a.simulator) / wall,
    redis: (b.redis - a.redis) / wall,
    client: (b.self - a.self) / wall,
    foreign: Math.max(0, b.machine - a.machine - ours) / wall,
  };
}

function diffStats(a: DeploymentStats, b: DeploymentStats): DeploymentStats {
  const out = { ...b };
  for (const key of Object.keys(out) as (keyof DeploymentStats)[])
    if (key !== 'inFlight' && key !== 'peakConcurrency') out[key] = b[key] - a[key];
  return out;
}

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

// ---------------------------------------------------------------- one phase

interface RequestRecord {
  /** Scheduled arrival, ms since the phase start. */
  arrivalMs: number;
  first?: Answer;
  retry?: Answer;
  /** A 429 that was not retried: its retry time fell after the phase end, or it named none. */
  notRetried?: 'beyond-phase' | 'no-retry-after';
  /** Time really waited before the honoured retry (the timer's own lateness included). */
  waitedMs?: number;
  /** Dropped because MAX_IN_FLIGHT requests were in flight. */
  dropped?: boolean;
  /** When the final answer arrived, ms since the phase start. */
  doneAt?: number;
}

interface UpstreamPoint {
  atMs: number;
  received: number;
  served: number;
  throttled: number;
}

interface PhaseRaw {
  policy: Policy;
  load: number;
  pool: string;
  rate: number;
  totalMs: number;
  warmupMs: number;
  records: RequestRecord[];
  lag: number[];
  measuredFromMs: number;
  measuredToMs: number;
  upstreamMeasured: DeploymentStats;
  upstreamMeasuredByDeployment: Record<string, DeploymentStats>;
  upstreamWholePhase: DeploymentStats;
  upstreamTimeline: UpstreamPoint[];
  gatewayView: { atMs: number; tokens: number }[];
  cores: ReturnType<typeof coresBetween>;
  /** How far CLOCK_REALTIME (Date.now, Redis TIME: the gateways' windows) moved against CLOCK_MONOTONIC
   *  (performance.now: the simulator's windows) over the measured part, ms; positive = realtime ran fast. */
  clockDriftMs: number;
  /** Largest minus smallest of realtime − monotonic, sampled every 500 ms over the measured part, ms. */
  clockRangeMs: number;
  unfinished: number;
  admin: unknown;
}

async function adminPools(gateway: GatewayHandle): Promise<unknown> {
  try {
    const response = await fetch(`${gateway.url}/admin/pools`, { headers: { 'api-key': ADMIN_KEY }, signal: AbortSignal.timeout(3000) });
    return await response.json();
  } catch (error) {
    return { error: (error as Error).message };
  }
}

async function runPhase(
  stack: Stack,
  settings: Settings,
  policy: Policy,
  load: number,
  capacityRps: number,
  body: Buffer,
  log: (line: string) => void,
): Promise<PhaseRaw> {
  const { simulator, client } = stack;
  const pool = poolName(policy, load);
  const path = requestPath(pool);
  const rate = capacityRps * load;
  const warmupMs = settings.warmupWindows * settings.windowMs;
  const totalMs = warmupMs + settings.windows * settings.windowMs;
  const warmupRate = capacityRps * (settings.warmupLoad ?? Math.min(load, 1));
  const arrivals = arrivalSchedule(warmupRate, warmupMs, rate, totalMs, settings.arrivals, settings.seed);
  const records: RequestRecord[] = [];
  const lag: number[] = [];
  const pending = new Set<Promise<void>>();
  const upstreamTimeline: UpstreamPoint[] = [];

  const statsBefore = sumStats(await simulator.stats());
  const t0 = performance.now();
  const snapshot = async () => {
    const cpu = cpuSnapshot(stack);
    const realMinusMono = Date.now() - performance.timeOrigin - performance.now();
    const stats = await simulator.stats();
    return { atMs: cpu.at - t0, stats, cpu, realMinusMono };
  };
  let startSnapshot: ReturnType<typeof snapshot> | undefined;
  const startTimer = setTimeout(() => {
    startSnapshot = snapshot();
    // Awaited after the phase, where a failure counts; until then it must not surface as unhandled.
    startSnapshot.catch(() => {});
  }, warmupMs);
  // Realtime minus monotonic, sampled: a step in it moves the gateways' bucket grid against the simulator's.
  const clockSamples: number[] = [];
  // The gateways' own view of the budget used (tokens in the deployments' windows, from /admin/pools),
  // compared after the phase with what the simulator really counts (see budgetViewOf).
  const gatewayView: { atMs: number; tokens: number }[] = [];
  // One poll of each kind at a time: a slow answer skips ticks instead of piling up requests.
  let adminBusy = false;
  let statsBusy = false;
  const poller = setInterval(() => {
    const at = performance.now() - t0;
    if (at >= warmupMs) clockSamples.push(Date.now() - performance.timeOrigin - performance.now());
    if (!adminBusy) {
      adminBusy = true;
      void adminPools(stack.gateways[0]!)
        .then((admin) => {
          const deployments = (admin as { pools?: Record<string, { deployments?: { tokensInWindow?: number }[] }> }).pools?.[pool]
            ?.deployments;
          if (deployments) gatewayView.push({ atMs: at, tokens: deployments.reduce((acc, d) => acc + (d.tokensInWindow ?? 0), 0) });
        })
        .finally(() => {
          adminBusy = false;
        });
    }
    if (!statsBusy) {
      statsBusy = true;
      void simulator
        .stats()
        .then(
          (stats) => {
            const total = sumStats(stats);
            upstreamTimeline.push({
              atMs: Math.round(performance.now() - t0),
              received: total.received,
              served: total.served,
              throttled: total.throttled,
            });
          },
          () => {},
        )
        .finally(() => {
          statsBusy = false;
        });
    }
  }, 500);
  let lastPrinted = 0;
  const progress = (now: number) => {
    if (now - lastPrinted < 5000) return;
    lastPrinted = now;
    const answered = records.filter((r) => r.doneAt !== undefined);
    const ok = answered.filter((r) => (r.retry ?? r.first)?.status === 200).length;
    log(`    ${fmt(now / 1000, 0)}s: arrivals ${records.length}, finished ${answered.length} (200: ${ok}), in flight ${client.inFlight}`);
  };

  const fire = (index: number, due: number, now: number) => {
    const record: RequestRecord = { arrivalMs: due };
    records.push(record);
    lag.push(now - due);
    if (client.inFlight >= MAX_IN_FLIGHT) {
      record.dropped = true;
      record.doneAt = now;
      return;
    }
    const gateway = index % client.count;
    const work = (async () => {
      record.first = await client.post(gateway, path, body, t0);
      if (record.first.status === 429) {
        const retryAfterMs = record.first.retryAfterMs;
        const at = performance.now() - t0;
        if (retryAfterMs === undefined) record.notRetried = 'no-retry-after';
        else if (at + retryAfterMs >= totalMs) record.notRetried = 'beyond-phase';
        else {
          const before = performance.now();
          await sleepUntil(before + retryAfterMs);
          record.waitedMs = performance.now() - before;
          record.retry = await client.post(gateway + 1, path, body, t0);
        }
      }
      record.doneAt = performance.now() - t0;
    })();
    pending.add(work);
    void work.finally(() => pending.delete(work));
  };

  let endSnapshot: Awaited<ReturnType<typeof snapshot>>;
  try {
    await new Promise<void>((resolvePromise) => {
      let k = 0;
      const tick = () => {
        const now = performance.now() - t0;
        while (k < arrivals.length && arrivals[k]! <= now) {
          fire(k, arrivals[k]!, now);
          k += 1;
        }
        progress(now);
        if (k >= arrivals.length) {
          setTimeout(resolvePromise, Math.max(0, totalMs - (performance.now() - t0)));
          return;
        }
        setTimeout(tick, Math.max(0, arrivals[k]! - (performance.now() - t0)));
      };
      tick();
    });
    endSnapshot = await snapshot();
  } finally {
    // Also when a snapshot fails: no timer of this phase outlives it.
    clearTimeout(startTimer);
    clearInterval(poller);
  }
  const start = startSnapshot ? await startSnapshot : await snapshot();

  // Drain: what is still in flight (retries were only scheduled inside the phase).
  if (pending.size > 0) await within(Promise.all([...pending]), DRAIN_MS, undefined);
  const unfinished = client.cutAll();
  await Promise.all([...pending]);
  const admin = await adminPools(stack.gateways[0]!);
  const whole = sumStats(await simulator.stats());

  const byDeployment: Record<string, DeploymentStats> = {};
  for (const [name, stats] of Object.entries(endSnapshot.stats)) {
    const before = start.stats[name];
    if (before) byDeployment[name] = diffStats(before, stats);
  }
  return {
    policy,
    load,
    pool,
    rate,
    totalMs,
    warmupMs,
    records,
    lag,
    measuredFromMs: start.atMs,
    measuredToMs: endSnapshot.atMs,
    upstreamMeasured: diffStats(sumStats(start.stats), sumStats(endSnapshot.stats)),
    upstreamMeasuredByDeployment: byDeployment,
    upstreamWholePhase: diffStats(statsBefore, whole),
    upstreamTimeline,
    gatewayView,
    cores: coresBetween(start.cpu, endSnapshot.cpu),
    clockDriftMs: endSnapshot.realMinusMono - start.realMinusMono,
    clockRangeMs: clockSamples.length
      ? Math.max(...clockSamples, start.realMinusMono, endSnapshot.realMinusMono) -
        Math.min(...clockSamples, start.realMinusMono, endSnapshot.realMinusMono)
      : 0,
    unfinished,
    admin: (admin as { pools?: Record<string, unknown> }).pools?.[pool] ?? admin,
  };
}

// ---------------------------------------------------------------- analysis

interface PhaseReport {
  policy: Policy;
  load: number;
  pool: string;
  offeredRps: number;
  /** Arrivals in the measured part (after the warm-up window). */
  requests: number;
  succeeded: number;
  succeededFirstTry: number;
  /** Final answer not 200 (a 429 whose honoured retry failed or that could not be retried, any other error). */
  clientErrors: number;
  clientErrorRate: number;
  clientErrorsByKind: Record<string, number>;
  /** 429 answers the client received (first tries and honoured retries). */
  gateway429: number;
  gateway429WithoutRetryAfter: number;
  /** 429 answers after the gateway had tried at least one deployment (an upstream 429 first). */
  gateway429AfterUpstream: number;
  retryAfterMs: Summary | null;
  honoured: number;
  honouredOk: number;
  /** Honoured retries the gateway refused without trying a deployment (others took the room first). */
  honouredRefusedAtGateway: number;
  /** Honoured retries the gateway admitted but a deployment throttled (the gateway's figure was early). */
  honouredRefusedUpstream: number;
  honouredOther: number;
  notRetriedBeyondPhase: number;
  /** Honoured waits beyond the told retry time (timer lateness), ms. */
  retryTimerLateMs: Summary | null;
  /** 200 answers that needed more than one upstream try (a failover after an upstream 429). */
  ok200AfterFailover: number;
  upstream: DeploymentStats;
  upstream429Share: number;
  upstreamCallsPerRequest: number;
  tokensServed: number;
  capacityTokens: number;
  capacityShare: number;
  measuredMs: number;
  latency200: Summary | null;
  endToEndSuccess: Summary | null;
  scheduleLag: Summary | null;
  dropped: number;
  unfinished: number;
  cores: ReturnType<typeof coresBetween>;
  clockDriftMs: number;
  clockRangeMs: number;
  /** The gateways' booked tokens minus what the simulator counts, as shares of the pool budget (spillway only). */
  gatewayOvercount: ReturnType<typeof budgetViewOf>;
}

/**
 * How the gateways' booked tokens (sum over the pool's deployments, sampled from /admin/pools) compare
 * with what the simulator counts at the same moment: every upstream call that arrived within the last
 * window, at the simulator's estimate each (each upstream try of an answer is one call: x-gateway-attempts).
 * Positive: the gateways think more budget is used than the simulator does (they refuse early).
 * As shares of the pool's budget (3 × tpm); only for pools with budgets.
 */
function budgetViewOf(
  raw: PhaseRaw,
  settings: Settings,
  estimate: number,
): { samples: number; mean: number; p95: number; min: number; max: number; atRefusals: Summary | null } | null {
  if (raw.policy !== 'spillway') return null;
  const calls = raw.records
    .flatMap((r) => [r.first, r.retry])
    .filter((a): a is Answer => a !== undefined && a.gatewayAttempts > 0)
    .map((a) => ({ at: a.sentAt, calls: a.gatewayAttempts }))
    .sort((a, b) => a.at - b.at);
  const budget = DEPLOYMENT_IDS.length * settings.tpm;
  /** Upstream calls within the window that ends at `at` (what the simulator counts then). */
  const callsInWindow = (at: number) => {
    let inWindow = 0;
    for (const call of calls) if (call.at > at - settings.windowMs && call.at <= at) inWindow += call.calls;
    return inWindow;
  };
  const shares = raw.gatewayView.filter((v) => v.atMs >= raw.warmupMs).map((v) => (v.tokens - callsInWindow(v.atMs) * estimate) / budget);
  // What the simulator counted (as a share of the budget) whenever the gateways refused a measured request
  // without trying a deployment: near 100 % means the refusal was needed.
  const refusals = raw.records
    .filter((r) => r.arrivalMs >= raw.warmupMs)
    .flatMap((r) => [r.first, r.retry])
    .filter((a): a is Answer => a !== undefined && a.status === 429 && a.gatewayAttempts === 0)
    .map((a) => (callsInWindow(a.sentAt) * estimate) / budget);
  const summary = summarize(shares);
  return summary
    ? { samples: summary.count, mean: summary.mean, p95: summary.p95, min: summary.min, max: summary.max, atRefusals: summarize(refusals) }
    : null;
}

/** Why a request did not end in a 200, as the report names it. */
function errorKind(r: RequestRecord, final: Answer | undefined): string {
  if (r.dropped) return 'dropped (client at max in flight)';
  if (final === undefined) return 'no answer';
  if (final.status === 429) {
    if (r.retry) return '429 again after the honoured retry';
    return r.notRetried === 'beyond-phase' ? '429 with a retry time after the phase end' : '429 without a retry time';
  }
  if (final.status === 0) return `transport: ${final.error ?? 'error'}`;
  return `status ${final.status}`;
}

function analyse(raw: PhaseRaw, settings: Settings, estimate: number): PhaseReport {
  const measured = raw.records.filter((r) => r.arrivalMs >= raw.warmupMs);
  const answers = measured.flatMap((r) => [r.first, r.retry].filter((a): a is Answer => a !== undefined));
  const finalOf = (r: RequestRecord) => (r.dropped ? undefined : (r.retry ?? r.first));
  const errorsByKind: Record<string, number> = {};
  let succeeded = 0;
  for (const r of measured) {
    const final = finalOf(r);
    if (final?.status === 200) {
      succeeded += 1;
      continue;
    }
    const kind = errorKind(r, final);
    errorsByKind[kind] = (errorsByKind[kind] ?? 0) + 1;
  }
  const retried = measured.filter((r) => r.retry);
  const measuredMs = raw.measuredToMs - raw.measuredFromMs;
  const tokensServed = raw.upstreamMeasured.promptTokens + raw.upstreamMeasured.completionTokens;
  const capacityTokens = (DEPLOYMENT_IDS.length * settings.tpm * measuredMs) / settings.windowMs;
  const okAnswers = answers.filter((a) => a.status === 200);
  const throttled = answers.filter((a) => a.status === 429);
  const endToEnd = measured.filter((r) => finalOf(r)?.status === 200 && r.doneAt !== undefined).map((r) => r.doneAt! - r.arrivalMs);
  return {
    policy: raw.policy,
    load: raw.load,
    pool: raw.pool,
    offeredRps: raw.rate,
    requests: measured.length,
    succeeded,
    succeededFirstTry: measured.filter((r) => r.first?.status === 200).length,
    clientErrors: measured.length - succeeded,
    clientErrorRate: measured.length ? (measured.length - succeeded) / measured.length : 0,
    clientErrorsByKind: errorsByKind,
    gateway429: throttled.length,
    gateway429WithoutRetryAfter: throttled.filter((a) => a.retryAfterMs === undefined).length,
    gateway429AfterUpstream: throttled.filter((a) => a.gatewayAttempts > 0).length,
    retryAfterMs: summarize(throttled.flatMap((a) => (a.retryAfterMs === undefined ? [] : [a.retryAfterMs]))),
    honoured: retried.length,
    honouredOk: retried.filter((r) => r.retry?.status === 200).length,
    honouredRefusedAtGateway: retried.filter((r) => r.retry?.status === 429 && r.retry.gatewayAttempts === 0).length,
    honouredRefusedUpstream: retried.filter((r) => r.retry?.status === 429 && r.retry.gatewayAttempts > 0).length,
    honouredOther: retried.filter((r) => r.retry?.status !== 200 && r.retry?.status !== 429).length,
    notRetriedBeyondPhase: measured.filter((r) => r.notRetried === 'beyond-phase').length,
    retryTimerLateMs: summarize(retried.map((r) => (r.waitedMs ?? 0) - (r.first?.retryAfterMs ?? 0))),
    ok200AfterFailover: okAnswers.filter((a) => a.gatewayAttempts > 1).length,
    upstream: raw.upstreamMeasured,
    upstream429Share: raw.upstreamMeasured.received ? raw.upstreamMeasured.throttled / raw.upstreamMeasured.received : 0,
    upstreamCallsPerRequest: measured.length ? raw.upstreamMeasured.received / measured.length : 0,
    tokensServed,
    capacityTokens,
    capacityShare: capacityTokens ? tokensServed / capacityTokens : 0,
    measuredMs,
    latency200: summarize(okAnswers.map((a) => a.latencyMs)),
    endToEndSuccess: summarize(endToEnd),
    scheduleLag: summarize(raw.lag),
    dropped: measured.filter((r) => r.dropped).length,
    unfinished: raw.unfinished,
    cores: raw.cores,
    clockDriftMs: raw.clockDriftMs,
    clockRangeMs: raw.clockRangeMs,
    gatewayOvercount: budgetViewOf(raw, settings, estimate),
  };
}

// ---------------------------------------------------------------- honesty probe

interface ProbeCycle {
  /** 'probed': the probe got a 429 and its retry time was honoured; 'room': it got 200 (room had freed meanwhile). */
  kind: 'probed' | 'room' | 'error';
  /** Requests sent to fill the pool before this probe, and how many of them were refused. */
  burst: number;
  burst429: number;
  firstStatus: number;
  retryAfterMs?: number;
  /** The same request sent two buckets before the told time: a 429 there means the figure was not slack by that much. */
  early?: { status: number; retryAfterMs?: number; gatewayAttempts: number };
  /** The honoured retry; gatewayAttempts 1 with a 200 means no deployment refused it on the way. */
  retry?: { status: number; gatewayAttempts: number; deployment?: string; waitedMs: number; retryAfterMs?: number };
  /** Why an 'error' cycle ended the series: the series' deadline came before what it waited for. */
  unmeasured?: string;
}

interface ProbeReport {
  policy: Policy;
  pool: string;
  cycles: ProbeCycle[];
  /** Probes that got a 429 and whose retry time was honoured. */
  probed: number;
  /** Honoured retries that got 200 at the first deployment tried (no upstream 429 on the way), early copy refused. */
  clean: number;
  retryOk: number;
  /** Honoured retries that the gateway admitted and a deployment then throttled (failover or 429 after attempts). */
  retryThrottledUpstream: number;
  /** Probes told more than two buckets, which sent an early copy two buckets before the told time. */
  earlySent: number;
  /** Of those, early copies admitted: the figure was slack by two buckets or more. */
  earlyAdmitted: number;
  retryAfterMs: Summary | null;
}

/**
 * After an overload phase: fill the pool with a burst (streaming requests of the same cost), wait until
 * every request of it has its answer head (so each is decided, upstream tries included), then send one
 * request. If it is refused, honour
 * its retry time exactly (from the arrival of its 429), with nothing else arriving, and check that the
 * retry gets 200 at the first deployment tried. A copy sent two buckets before the told time must be
 * refused too (else the figure was slack). If the probe is admitted (room freed while the burst
 * settled), the cycle is skipped and the pool filled again.
 */
async function honestyProbe(
  stack: Stack,
  settings: Settings,
  policy: Policy,
  pool: string,
  burstSize: number,
  body: Buffer,
): Promise<ProbeReport> {
  const { client } = stack;
  const path = requestPath(pool);
  const bucketMs = settings.windowMs / 60;
  const cycles: ProbeCycle[] = [];
  const t0 = performance.now();
  // Every step (filling, the probe, the told wait, the retry, the final drain) ends by this deadline:
  // the series ends with its report inside the run's hard cap, which counts PROBE_SERIES_CAP_MS for it.
  const deadline = t0 + PROBE_SERIES_CAP_MS;
  const left = () => Math.max(0, deadline - performance.now());
  const settled: Promise<Answer>[] = [];
  let gatewayIndex = 0;
  /** One request; undefined when the deadline comes first (the request is cut with the rest at the end). */
  const send = () => {
    const answer = client.post(gatewayIndex++, path, body, t0);
    settled.push(answer);
    return within(answer, left(), undefined);
  };
  // The burst streams, so that an admitted request's head comes at its first token, not after the whole
  // completion: once every head is in, every request of the burst has been decided.
  const streamBody = Buffer.from(JSON.stringify({ ...(JSON.parse(body.toString()) as Record<string, unknown>), stream: true }));
  /** Resolves with the status once the answer's head is in (every upstream try of it is over by then). */
  const head = () =>
    new Promise<number>((resolvePromise) => {
      settled.push(client.post(gatewayIndex++, path, streamBody, t0, resolvePromise));
    });
  let probed = 0;
  for (let cycle = 0; cycle < settings.probes * 4 && probed < settings.probes && !aborting && left() > 0; cycle++) {
    let burst = 0;
    let burst429 = 0;
    for (let batch = 0; batch < PROBE_FILL_BATCHES && burst429 === 0 && !aborting && left() > 0; batch++) {
      const statuses = await within(
        Promise.all(Array.from({ length: burstSize }, head)),
        Math.min(REQUEST_TIMEOUT_MS, left()),
        [] as number[],
      );
      burst += burstSize;
      burst429 += statuses.filter((status) => status === 429).length;
    }
    if (burst429 === 0) {
      cycles.push({ kind: 'error', burst, burst429, firstStatus: 0 });
      continue;
    }
    const first = await send();
    const toldAt = performance.now();
    if (first === undefined) {
      cycles.push({ kind: 'error', burst, burst429, firstStatus: 0, unmeasured: 'no answer to the probe before the deadline' });
      break;
    }
    const told = first.retryAfterMs;
    if (first.status === 200) {
      cycles.push({ kind: 'room', burst, burst429, firstStatus: 200 });
      continue;
    }
    if (first.status !== 429 || told === undefined) {
      cycles.push({ kind: 'error', burst, burst429, firstStatus: first.status });
      continue;
    }
    // Waiting past the deadline would overrun the series: this retry time cannot be checked.
    if (toldAt + told >= deadline) {
      cycles.push({
        kind: 'error',
        burst,
        burst429,
        firstStatus: 429,
        retryAfterMs: told,
        unmeasured: 'the told retry time falls after the deadline',
      });
      break;
    }
    let early: Answer | undefined;
    if (told - 2 * bucketMs > 5) {
      await sleepUntil(toldAt + told - 2 * bucketMs);
      early = await send();
    }
    await sleepUntil(toldAt + told);
    const waitedMs = performance.now() - toldAt;
    const retry = await send();
    if (retry === undefined) {
      cycles.push({
        kind: 'error',
        burst,
        burst429,
        firstStatus: 429,
        retryAfterMs: told,
        unmeasured: 'no answer to the honoured retry before the deadline',
      });
      break;
    }
    probed += 1;
    cycles.push({
      kind: 'probed',
      burst,
      burst429,
      firstStatus: 429,
      retryAfterMs: told,
      ...(early
        ? {
            early: {
              status: early.status,
              gatewayAttempts: early.gatewayAttempts,
              ...(early.retryAfterMs !== undefined ? { retryAfterMs: early.retryAfterMs } : {}),
            },
          }
        : {}),
      retry: {
        status: retry.status,
        gatewayAttempts: retry.gatewayAttempts,
        waitedMs,
        ...(retry.deployment ? { deployment: retry.deployment } : {}),
        ...(retry.retryAfterMs !== undefined ? { retryAfterMs: retry.retryAfterMs } : {}),
      },
    });
  }
  // Let the burst requests finish before the simulator is reset (within the deadline), then cut the rest.
  await within(Promise.all(settled), Math.min(DRAIN_MS, left()), undefined);
  client.cutAll();
  const probedCycles = cycles.filter((c) => c.kind === 'probed');
  return {
    policy,
    pool,
    cycles,
    probed: probedCycles.length,
    clean: probedCycles.filter((c) => c.retry?.status === 200 && c.retry.gatewayAttempts === 1 && c.early?.status !== 200).length,
    retryOk: probedCycles.filter((c) => c.retry?.status === 200).length,
    retryThrottledUpstream: probedCycles.filter((c) => (c.retry?.gatewayAttempts ?? 0) > (c.retry?.status === 200 ? 1 : 0)).length,
    earlySent: probedCycles.filter((c) => c.early).length,
    earlyAdmitted: probedCycles.filter((c) => c.early?.status === 200).length,
    retryAfterMs: summarize(probedCycles.map((c) => c.retryAfterMs ?? 0)),
  };
}

// ---------------------------------------------------------------- report

interface Verdict {
  target: string;
  policy: Policy;
  load: number;
  measured: string;
  pass: boolean;
}

function verdicts(reports: PhaseReport[], probes: ProbeReport[]): Verdict[] {
  const out: Verdict[] = [];
  for (const r of reports) {
    if (r.load < 1) {
      out.push({
        target: 'no client-visible errors',
        policy: r.policy,
        load: r.load,
        measured: `${r.clientErrors} of ${r.requests}`,
        pass: r.clientErrors === 0,
      });
      out.push({
        target: 'upstream 429s < 1 % of upstream calls',
        policy: r.policy,
        load: r.load,
        measured: `${r.upstream.throttled} of ${r.upstream.received} (${pct(r.upstream429Share)})`,
        pass: r.upstream429Share < 0.01,
      });
    } else {
      out.push({
        target: 'tokens served ≥ 95 % of capacity',
        policy: r.policy,
        load: r.load,
        measured: pct(r.capacityShare, 1),
        pass: r.capacityShare >= 0.95,
      });
      const probe = probes.find((p) => p.policy === r.policy);
      const everyRetryTime = r.gateway429WithoutRetryAfter === 0;
      const noEarlyFigure = r.honouredRefusedUpstream === 0;
      const probeOk = probe !== undefined && probe.probed > 0 && probe.clean === probe.probed;
      out.push({
        target: 'every rejection told a retry time that works when honoured',
        policy: r.policy,
        load: r.load,
        measured:
          `429s without a retry time: ${r.gateway429WithoutRetryAfter}; ` +
          `honoured in the run: ${r.honouredOk}/${r.honoured} got 200, ${r.honouredRefusedAtGateway} refused by the gateway (room taken by new arrivals), ${r.honouredRefusedUpstream} admitted but throttled upstream; ` +
          `probe: ${probe ? `${probe.clean}/${probe.probed} clean` : 'not run'}`,
        pass: everyRetryTime && noEarlyFigure && probeOk,
      });
    }
  }
  return out;
}

function loadLabel(load: number): string {
  return `${Math.round(load * 100)} %`;
}

function mainTable(reports: PhaseReport[]): { header: string[]; rows: string[][] } {
  const header = [
    'policy',
    'load',
    'offered req/s',
    'requests',
    'client errors',
    'gateway 429s',
    'honoured retries → 200',
    'upstream calls',
    'upstream 429s',
    'tokens served / capacity',
    'p50 ms',
    'p95 ms',
  ];
  const rows = reports.map((r) => [
    POLICY_LABEL[r.policy],
    loadLabel(r.load),
    fmt(r.offeredRps, 1),
    String(r.requests),
    `${r.clientErrors} (${pct(r.clientErrorRate, 1)})`,
    String(r.gateway429),
    r.honoured ? `${r.honouredOk}/${r.honoured} (${pct(r.honouredOk / r.honoured, 0)})` : '–',
    String(r.upstream.received),
    `${r.upstream.throttled} (${pct(r.upstream429Share, 1)})`,
    pct(r.capacityShare, 1),
    fmt(r.latency200?.p50, 0),
    fmt(r.latency200?.p95, 0),
  ]);
  return { header, rows };
}

function retryTable(reports: PhaseReport[]): { header: string[]; rows: string[][] } {
  const header = [
    'policy',
    'load',
    'served 1st try',
    'served after retry',
    '429s after an upstream 429',
    'retry-after p50 / p95 ms',
    'honoured: refused at gateway',
    'honoured: throttled upstream',
    'not retried (after phase end)',
    '200s after failover',
    'upstream calls / request',
    'end-to-end p95 ms (successes)',
    'gateway view − simulator’s, mean / p95 (of budget)',
  ];
  const rows = reports.map((r) => [
    POLICY_LABEL[r.policy],
    loadLabel(r.load),
    String(r.succeededFirstTry),
    String(r.honouredOk),
    String(r.gateway429AfterUpstream),
    r.retryAfterMs ? `${fmt(r.retryAfterMs.p50, 0)} / ${fmt(r.retryAfterMs.p95, 0)}` : '–',
    String(r.honouredRefusedAtGateway),
    String(r.honouredRefusedUpstream),
    String(r.notRetriedBeyondPhase),
    String(r.ok200AfterFailover),
    fmt(r.upstreamCallsPerRequest, 2),
    fmt(r.endToEndSuccess?.p95, 0),
    r.gatewayOvercount ? `${pct(r.gatewayOvercount.mean, 1)} / ${pct(r.gatewayOvercount.p95, 1)}` : '–',
  ]);
  return { header, rows };
}

function probeTable(probes: ProbeReport[]): { header: string[]; rows: string[][] } {
  const header = [
    'policy',
    'probes',
    'retry-after told (ms)',
    'honoured retry → 200',
    'clean (200 at the first deployment tried)',
    'honoured retry throttled upstream',
    'early copies (2 buckets before) admitted / sent',
    'cycles with room (skipped)',
  ];
  const rows = probes.map((p) => [
    POLICY_LABEL[p.policy],
    String(p.probed),
    p.cycles
      .filter((c) => c.kind === 'probed')
      .map((c) => fmt(c.retryAfterMs, 0))
      .join(', ') || '–',
    `${p.retryOk}/${p.probed}`,
    `${p.clean}/${p.probed}`,
    String(p.retryThrottledUpstream),
    `${p.earlyAdmitted}/${p.earlySent}`,
    String(p.cycles.filter((c) => c.kind === 'room').length),
  ]);
  return { header, rows };
}

const DOC_START = '<!-- admission:results:start (generated by loadtest/admission-bench.ts; edit outside these markers) -->';
const DOC_END = '<!-- admission:results:end -->';

function writeDoc(section: string): void {
  writeDocSection(join(REPO_ROOT, 'docs', 'admission.md'), DOC_START, DOC_END, section, '# Admission benchmark\n\n');
}

// ---------------------------------------------------------------- main

function parseSettings(values: Record<string, string | boolean | undefined>): Settings {
  const int = (name: string, fallback: number, min: number, max: number) => {
    const raw = values[name];
    const value = typeof raw === 'string' ? Number(raw) : fallback;
    if (!Number.isInteger(value) || value < min || value > max) throw new Error(`--${name} must be a whole number in ${min}..${max}`);
    return value;
  };
  const windowMs = int('window-ms', 6000, 600, 600_000);
  if (windowMs % 60 !== 0) throw new Error('--window-ms must be a multiple of 60 (the gateway cuts its window into 60 buckets)');
  const loads = (typeof values.loads === 'string' ? values.loads : '0.9,1.5').split(',').map((v) => Number(v.trim()));
  if (loads.some((l) => !(l > 0 && l <= 5))) throw new Error('--loads: fractions of capacity in (0, 5]');
  const policies = (typeof values.policies === 'string' ? values.policies : 'spillway,baseline')
    .split(',')
    .map((v) => v.trim()) as Policy[];
  if (policies.some((p) => p !== 'spillway' && p !== 'baseline') || policies.length === 0)
    throw new Error('--policies: spillway and/or baseline');
  const arrivals = typeof values.arrivals === 'string' ? values.arrivals : 'constant';
  const warmupLoad = typeof values['warmup-load'] === 'string' ? Number(values['warmup-load']) : undefined;
  if (warmupLoad !== undefined && !(warmupLoad > 0 && warmupLoad <= 5)) throw new Error('--warmup-load: a fraction of capacity in (0, 5]');
  if (arrivals !== 'constant' && arrivals !== 'poisson') throw new Error('--arrivals: constant or poisson');
  const gatewayWindowMs = int('gateway-window-ms', windowMs, 600, 600_000);
  if (gatewayWindowMs % 60 !== 0) throw new Error('--gateway-window-ms must be a multiple of 60');
  return {
    windowMs,
    gatewayWindowMs,
    tpm: int('tpm', 27_000, 1000, 10_000_000),
    rpm: int('rpm', 1200, 6, 1_000_000),
    promptChars: int('prompt-chars', 100, 1, 100_000),
    maxTokens: int('max-tokens', 200, 1, 100_000),
    ttftMs: int('ttft-ms', 30, 0, 10_000),
    perTokenMs: int('per-token-ms', 1, 0, 1000),
    loads,
    policies,
    warmupWindows: int('warmup-windows', 1, 0, 10),
    warmupLoad,
    stripRatelimitHeaders: values['strip-ratelimit-headers'] === true,
    windows: int('windows', 3, 1, 20),
    arrivals,
    probes: int('probes', 5, 0, 50),
    seed: int('seed', 1, 0, 2 ** 31),
  };
}

function costsOf(settings: Settings, body: Record<string, unknown>): Costs {
  const parsed = parseRequest('chat', body);
  if (!parsed.ok) throw new Error('the benchmark request does not parse as the simulator parses it');
  const simulatorEstimate = estimateCost(parsed.request, 16);
  const usage = countPromptTokens(parsed.request, 'o200k_base') + settings.maxTokens;
  const gatewayEstimate = estimateRequest('chat', body, { encoding: 'o200k_base', defaultMaxTokens: 1024 }).total;
  const requestsPerWindowPerDeployment = Math.floor(settings.tpm / simulatorEstimate);
  const capacityRps = (DEPLOYMENT_IDS.length * requestsPerWindowPerDeployment * 1000) / settings.windowMs;
  return { simulatorEstimate, gatewayEstimate, usage, requestsPerWindowPerDeployment, capacityRps };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      'window-ms': { type: 'string' },
      'gateway-window-ms': { type: 'string' },
      'keep-logs': { type: 'boolean' },
      tpm: { type: 'string' },
      rpm: { type: 'string' },
      'prompt-chars': { type: 'string' },
      'max-tokens': { type: 'string' },
      'ttft-ms': { type: 'string' },
      'per-token-ms': { type: 'string' },
      loads: { type: 'string' },
      policies: { type: 'string' },
      'warmup-windows': { type: 'string' },
      'warmup-load': { type: 'string' },
      'strip-ratelimit-headers': { type: 'boolean' },
      windows: { type: 'string' },
      arrivals: { type: 'string' },
      probes: { type: 'string' },
      seed: { type: 'string' },
      'no-doc': { type: 'boolean' },
      json: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const settings = parseSettings(values);
  const command = `npm run bench:admission${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  const bodyObject = { messages: [{ role: 'user', content: promptText(settings.promptChars) }], max_tokens: settings.maxTokens };
  const body = Buffer.from(JSON.stringify(bodyObject));
  const costs = costsOf(settings, bodyObject);
  if (costs.requestsPerWindowPerDeployment < 1) throw new Error('one request costs more than a deployment’s whole budget: raise --tpm');
  const log = (line: string) => process.stdout.write(`${line}\n`);

  // Bounded: the phases, their drains and probes, plus start-up and stop; the hard cap ends everything.
  const phaseMs = (settings.warmupWindows + settings.windows) * settings.windowMs;
  const phases = settings.loads.length * settings.policies.length;
  const overloadPhases = settings.loads.filter((l) => l > 1).length * settings.policies.length;
  const plannedMs = phases * (phaseMs + 3000) + (settings.probes > 0 ? overloadPhases * 15_000 : 0) + 30_000;
  const hardCapMs = plannedMs + phases * DRAIN_MS + overloadPhases * PROBE_SERIES_CAP_MS + 60_000;
  const processes = new ProcessSet();
  processes.capRunTime(hardCapMs);
  const startedAt = new Date();
  const wallStart = performance.now();
  const loadBefore = loadavg();

  let client: Client | undefined;
  try {
    const dir = makeWorkDir(processes, 'spillway-admission-');
    const redis = await startRedis(processes, dir);
    const simDeployments: SimDeployment[] = DEPLOYMENT_IDS.map((id, index) => ({
      name: `admission-${id}`,
      tpm: settings.tpm,
      rpm: settings.rpm,
      region: REGIONS[index] ?? 'East US',
      completionTokens: settings.maxTokens,
    }));
    // Not behind the gateways: only measureBucketPhase reads the simulator's bucket grid through it.
    simDeployments.push({ name: CLOCK_DEPLOYMENT, tpm: 1000, rpm: 600, latency: { ttftMs: 0, perTokenMs: 0 }, completionTokens: 1 });
    const simulator = await startSimulatorProcess(processes, dir, {
      deployments: simDeployments,
      windowMs: settings.windowMs,
      latency: { ttftMs: settings.ttftMs, perTokenMs: settings.perTokenMs },
      countRejected: true,
    });
    // The seed's policy: round-robin, no budgets in the config (so it never refuses before trying).
    const roundRobin: GatewayPoolInput = {
      strategy: 'round-robin',
      deployments: DEPLOYMENT_IDS.map((id) => ({ id, deployment: `admission-${id}`, model: 'gpt-4o' })),
    };
    const spillway: GatewayPoolInput = {
      strategy: 'least-requests',
      deployments: roundRobin.deployments.map((d) => ({ ...d, tpm: settings.tpm, rpm: settings.rpm })),
    };
    // `warmup` is for the JIT only: without budgets it never refuses.
    const pools: Record<string, GatewayPoolInput> = { warmup: roundRobin };
    for (const load of settings.loads) {
      for (const policy of settings.policies) pools[poolName(policy, load)] = policy === 'spillway' ? spillway : roundRobin;
    }
    const upstreamUrl = settings.stripRatelimitHeaders ? await startHeaderStrippingProxy(simulator.url, processes) : simulator.url;
    const configFile = writeGatewayConfig(dir, 'gateway', gatewayConfig(upstreamUrl, pools, { windowMs: settings.gatewayWindowMs }));
    const gateways = await Promise.all(
      Array.from({ length: GATEWAYS }, (_, index) =>
        startGateway(processes, dir, {
          name: `gateway-${index + 1}`,
          configFile,
          redisUrl: redis.url,
          logLevel: 'warn',
          env: { ADMIN_API_KEY: ADMIN_KEY },
        }),
      ),
    );
    client = new Client(gateways.map((g) => g.url));
    const stopClient = () => {
      aborting = true;
      client?.cutAll();
      client?.close();
    };
    process.once('SIGINT', stopClient);
    process.once('SIGTERM', stopClient);
    const stack: Stack = { simulator, gateways, redisPid: redis.child.pid, client };

    log(
      `admission benchmark: ${GATEWAYS} gateways [${gateways.map((g) => g.port).join(', ')}] with Redis ${redis.url}, simulator ${simulator.url}`,
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

    // Smoke and JIT warm-up through every gateway (a pool without budgets), then a clean simulator.
    const warmPath = requestPath('warmup');
    const smoke = await client.post(0, warmPath, body, performance.now());
    if (smoke.status !== 200) throw new Error(`smoke request got ${smoke.status} ${smoke.error ?? ''}`);
    for (let batch = 0; batch < 15; batch++) {
      const answers = await Promise.all(Array.from({ length: 9 }, (_, i) => client!.post(i, warmPath, body, performance.now())));
      const bad = answers.find((a) => a.status !== 200);
      if (bad) throw new Error(`warm-up request got ${bad.status} ${bad.error ?? ''}`);
    }
    const bucketPhaseMs = await measureBucketPhase(simulator.url, settings.windowMs / 60);
    log(
      `  bucket grids: the simulator's ${settings.windowMs / 60} ms buckets end ${bucketPhaseMs === undefined ? '(not measured)' : `${fmt(bucketPhaseMs, 0)} ms`} after the gateways' (Redis clock); ` +
        "(the two grids are independent, as Azure's and the gateways' are)",
    );
    await simulator.reset();

    const raws: PhaseRaw[] = [];
    const reports: PhaseReport[] = [];
    const probes: ProbeReport[] = [];
    const burstSize = Math.max(8, Math.ceil((DEPLOYMENT_IDS.length * costs.requestsPerWindowPerDeployment) / 6));
    for (const load of settings.loads) {
      for (const policy of settings.policies) {
        log(
          `\n  phase ${POLICY_LABEL[policy]} at ${loadLabel(load)}: ${fmt(costs.capacityRps * load, 1)} requests/s for ${phaseMs / 1000} s (first ${(settings.warmupWindows * settings.windowMs) / 1000} s at ${fmt(costs.capacityRps * (settings.warmupLoad ?? Math.min(load, 1)), 1)}/s, not measured)`,
        );
        const raw = await runPhase(stack, settings, policy, load, costs.capacityRps, body, log);
        const report = analyse(raw, settings, costs.simulatorEstimate);
        raws.push(raw);
        reports.push(report);
        log(
          `    measured: ${report.requests} requests, client errors ${report.clientErrors}, gateway 429s ${report.gateway429}, upstream ${report.upstream.received} calls / ${report.upstream.throttled} 429s, ` +
            `tokens ${pct(report.capacityShare, 1)} of capacity; foreign load ${fmt(report.cores.foreign, 2)} cores, client lag p99 ${fmt(report.scheduleLag?.p99, 1)} ms, ` +
            `${report.gatewayOvercount ? `gateway view − simulator's: mean ${pct(report.gatewayOvercount.mean, 1)}, p95 ${pct(report.gatewayOvercount.p95, 1)} of the budget; ` : ''}` +
            `${report.gatewayOvercount?.atRefusals ? `simulator's use at refusals: min ${pct(report.gatewayOvercount.atRefusals.min, 1)}, p50 ${pct(report.gatewayOvercount.atRefusals.p50, 1)}; ` : ''}` +
            `realtime − monotonic clock ${report.clockDriftMs >= 0 ? '+' : ''}${fmt(report.clockDriftMs, 1)} ms (range ${fmt(report.clockRangeMs, 1)} ms)`,
        );
        if (load > 1 && settings.probes > 0) {
          const probe = await honestyProbe(stack, settings, policy, raw.pool, burstSize, body);
          probes.push(probe);
          log(
            `    honesty probe: ${probe.probed} probes, retry-after ${probe.cycles.map((c) => (c.kind === 'probed' ? fmt(c.retryAfterMs, 0) : c.kind)).join(', ')} ms → ${probe.retryOk} got 200, ${probe.clean} clean, ${probe.retryThrottledUpstream} throttled upstream`,
          );
        }
        await simulator.reset();
      }
    }

    // ---------------------------------------------------------------- report
    const checks = verdicts(reports, probes);
    const main = mainTable(reports);
    const retries = retryTable(reports);
    const probeRows = probeTable(probes);
    const loadAfter = loadavg();
    const runSeconds = (performance.now() - wallStart) / 1000;
    log('');
    log(textTable(main.header, main.rows));
    log('');
    log(textTable(retries.header, retries.rows));
    if (probes.length) {
      log('');
      log(textTable(probeRows.header, probeRows.rows));
    }
    log('');
    log(
      textTable(
        ['target', 'policy', 'load', 'measured', 'result'],
        checks.map((c) => [c.target, POLICY_LABEL[c.policy], loadLabel(c.load), c.measured, c.pass ? 'PASS' : 'FAIL']),
      ),
    );
    log(
      `\nrun time ${fmt(runSeconds, 0)} s; load average before ${loadBefore.map((v) => v.toFixed(2)).join(' ')}, after ${loadAfter.map((v) => v.toFixed(2)).join(' ')}`,
    );

    const output = {
      at: startedAt.toISOString(),
      command,
      revision: gitRevision(),
      machine: { cores: cpus().length, cpu: cpuModel(), node: process.version, loadAverageBefore: loadBefore, loadAverageAfter: loadAfter },
      settings,
      costs,
      bucketPhaseMs,
      runSeconds,
      reports,
      probes,
      verdicts: checks,
      phases: raws.map(({ records, lag: _lag, ...rest }) => ({
        ...rest,
        // Per-second client timeline (by arrival second): arrivals, final 200s, first-try 429s.
        timeline: timelineOf(records),
      })),
    };
    const resultsDir = join(REPO_ROOT, 'loadtest', 'results');
    mkdirSync(resultsDir, { recursive: true });
    const file = join(resultsDir, `admission-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, JSON.stringify(output, null, 2));
    if (values.json) writeFileSync(resolve(values.json), JSON.stringify(output, null, 2));
    log(`result: ${file}${values.json ? ` and ${resolve(values.json)}` : ''}`);
    if (values['keep-logs']) {
      for (const gateway of gateways) copyFileSync(gateway.log, file.replace(/\.json$/, `-${gateway.name}.log`));
      log(`gateway logs: ${file.replace(/\.json$/, '-gateway-N.log')}`);
    }

    if (!values['no-doc']) {
      const noise = reports.map((r) => `${POLICY_LABEL[r.policy]} ${loadLabel(r.load)}: ${fmt(r.cores.foreign, 2)}`).join('; ');
      const own = reports
        .map(
          (r) =>
            `${POLICY_LABEL[r.policy]} ${loadLabel(r.load)}: gateways ${fmt(r.cores.gateways, 2)}, simulator ${fmt(r.cores.simulator, 2)}, Redis ${fmt(r.cores.redis, 2)}, client ${fmt(r.cores.client, 2)}`,
        )
        .join('; ');
      const lagLine = reports.map((r) => `${POLICY_LABEL[r.policy]} ${loadLabel(r.load)}: ${fmt(r.scheduleLag?.p99, 1)} ms`).join('; ');
      const section = [
        `Command: \`${command}\`  `,
        `Date: ${startedAt.toISOString()}; run time ${fmt(runSeconds, 0)} s  `,
        `Revision: ${output.revision}  `,
        `Machine: ${cpus().length} cores (${cpuModel()}), shared; node ${process.version}; load average before ${loadBefore.map((v) => v.toFixed(2)).join(' ')}, after ${loadAfter.map((v) => v.toFixed(2)).join(' ')}  `,
        `Settings: ${settings.stripRatelimitHeaders ? 'DIAGNOSTIC, x-ratelimit-* headers stripped on the way to the gateways; ' : ''}window ${settings.windowMs} ms (the scaled minute${settings.gatewayWindowMs !== settings.windowMs ? `; the gateways' window ${settings.gatewayWindowMs} ms` : ''}); 3 deployments × ${settings.tpm} tokens and ${settings.rpm} requests per window; ` +
          `latency ${settings.ttftMs} ms + ${settings.perTokenMs} ms/token; request ${settings.promptChars}-char prompt, max_tokens ${settings.maxTokens} (simulator estimate ${costs.simulatorEstimate}, gateway estimate ${costs.gatewayEstimate}, usage ${costs.usage} tokens); ` +
          `capacity ${costs.requestsPerWindowPerDeployment} requests/window/deployment = ${fmt(costs.capacityRps, 1)} requests/s summed; ${settings.arrivals} arrivals; ` +
          `bucket grids: the simulator's buckets end ${bucketPhaseMs === undefined ? '(not measured)' : `${fmt(bucketPhaseMs, 0)} ms`} after the gateways'; ` +
          `each phase ${settings.warmupWindows} warm-up window(s) at ${settings.warmupLoad === undefined ? 'the phase load, at most 100 %,' : `${loadLabel(settings.warmupLoad)} of capacity`} + ${settings.windows} measured windows; ${settings.probes} honesty probes per overload phase (burst ${burstSize}).`,
        '',
        '### Results',
        '',
        markdownTable(main.header, main.rows),
        '',
        '### Retries and failovers',
        '',
        markdownTable(retries.header, retries.rows),
        '',
        ...(probes.length
          ? ['### Honesty probe (after the 150 % phase, nothing else arriving)', '', markdownTable(probeRows.header, probeRows.rows), '']
          : []),
        '### Against the targets',
        '',
        markdownTable(
          ['target', 'policy', 'load', 'measured', 'result'],
          checks.map((c) => [c.target, POLICY_LABEL[c.policy], loadLabel(c.load), c.measured, c.pass ? 'PASS' : 'FAIL']),
        ),
        '',
        `Client-visible errors by kind: ${reports
          .map(
            (r) =>
              `${POLICY_LABEL[r.policy]} ${loadLabel(r.load)}: ${
                Object.entries(r.clientErrorsByKind)
                  .map(([k, v]) => `${k} ${v}`)
                  .join(', ') || 'none'
              }`,
          )
          .join('; ')}.  `,
        `Machine noise (CPU of processes outside the benchmark, cores): ${noise}.  `,
        `Our processes (cores): ${own}.  `,
        `Client schedule lag p99: ${lagLine}.  `,
        `Realtime clock (Redis, the gateways' windows) against the monotonic clock (the simulator's windows) over each measured part: ${reports.map((r) => `${POLICY_LABEL[r.policy]} ${loadLabel(r.load)}: ${r.clockDriftMs >= 0 ? '+' : ''}${fmt(r.clockDriftMs, 1)} ms (range ${fmt(r.clockRangeMs, 1)} ms)`).join('; ')}.  `,
        `Raw figures: \`loadtest/results/${file.split('/').pop()}\` (not committed).`,
      ].join('\n');
      writeDoc(section);
      log('wrote docs/admission.md (results section)');
    }
    return checks.some((c) => c.policy === 'spillway' && !c.pass) ? 99 : 0;
  } finally {
    client?.close();
    await processes.stopAll();
  }
}

function timelineOf(records: RequestRecord[]): { second: number; arrivals: number; ok: number; first429: number; retried: number }[] {
  const out: { second: number; arrivals: number; ok: number; first429: number; retried: number }[] = [];
  for (const r of records) {
    const second = Math.floor(r.arrivalMs / 1000);
    while (out.length <= second) out.push({ second: out.length, arrivals: 0, ok: 0, first429: 0, retried: 0 });
    const point = out[second]!;
    point.arrivals += 1;
    if ((r.retry ?? r.first)?.status === 200) point.ok += 1;
    if (r.first?.status === 429) point.first429 += 1;
    if (r.retry) point.retried += 1;
  }
  return out;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench:admission: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(2);
  },
);
