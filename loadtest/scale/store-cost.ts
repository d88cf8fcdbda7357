/**
 * What a store call costs Redis, for the current store and the previous design (the store at commit
 * b7017e8) side by side, interleaved, against a private redis-server this module starts:
 *
 *   acquire   Redis time per acquire (the acquire script's own entries in SLOWLOG, slowlog-log-slower-than
 *             0: the same figure as INFO commandstats usec_per_call, for that script alone) in
 *             acquire + release pairs, at 3 / 10 / 30 / 100 deployments with tpm and rpm budgets
 *             (least-requests, the default strategy), plus this process's CPU per pair (ioredis
 *             command building and reply parsing, the gateway-side cost of a store call);
 *   renewal   one renewal of 5 000 / 20 000 leases of one pool (10 deployments): the longest single
 *             command Redis ran for it, the total Redis time of the round, how many commands, and the
 *             worst round trip another client saw meanwhile (a process of its own sending PING after PING,
 *             so this process's command building does not count against it), its p99, and how many
 *             PINGs Redis answered in between (none while one long script holds it).
 *
 * Run directly (`node loadtest/scale/store-cost.ts [--rounds N]`) it prints a table and the JSON;
 * `measureStoreCost` is what loadtest/scale-bench.ts calls. Bounded: about 30-60 s with the defaults.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { launchRedis } from '../../shared/processes/redis-server.ts';
import { ProcessSet, stopChild } from '../../shared/processes/process-set.ts';
import { STORE_REDIS_OPTIONS } from '../../shared/store/redis-store.ts';
import type { Lease, PoolLayout, Store } from '../../shared/store/types.ts';
import { REPO_ROOT } from '../lib/stack.ts';
import { median } from './figures.ts';

/** The commit whose store is "the previous design". */
export const BASELINE_COMMIT = 'b7017e8';

export interface StoreCostOptions {
  /** Interleaved rounds (each measures both designs, in alternating order). Default 3. */
  rounds?: number;
  /** Deployments per pool for the acquire figures. Default 3, 10, 30, 100. */
  deployments?: readonly number[];
  /** Acquire + release pairs per design per round per pool size. Default 200. */
  pairs?: number;
  /** Leases renewed in one round. Default 5 000 and 20 000. */
  leases?: readonly number[];
  /** Deployments the renewed leases are spread over (one pool). Default 10. */
  renewalDeployments?: number;
  /** redis-server binary. Default: redis-server on PATH. */
  redisBinary?: string;
  /** Where the redis-server is started (it dies with the bench, and is stopped with the rest on a signal). Default: a set of its own. */
  processes?: ProcessSet;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export type Design = 'current' | 'previous';

/** One figure for both designs: the median over rounds, and each round's value. */
export interface SideBySide {
  current: number;
  previous: number;
  /** previous / current (how many times cheaper the current design is). */
  ratio: number;
  rounds: Record<Design, number[]>;
}

export interface AcquireCostRow {
  deployments: number;
  /** Mean Redis time of one acquire script run, µs (usec_per_call of that script). */
  acquireUs: SideBySide;
  /** Median Redis time of one acquire script run, µs. */
  acquireMedianUs: SideBySide;
  /** Mean Redis time of one release script run, µs. */
  releaseUs: SideBySide;
  /** This process's CPU (user + system) per acquire + release pair, µs: building commands and parsing replies. */
  clientCpuUsPerPair: SideBySide;
}

export interface RenewalRow {
  leases: number;
  /** The longest single command Redis ran for the renewal, µs: how long it held Redis in one go. */
  longestCommandUs: SideBySide;
  /** The median command of the renewal, µs (the longest is what a busy machine's scheduling inflates first). */
  medianCommandUs: SideBySide;
  /** Redis time of all the renewal's commands, µs. */
  totalRedisUs: SideBySide;
  /** Renewal commands Redis ran. */
  commands: SideBySide;
  /** Wall time of the renewal call as its caller saw it, ms. */
  wallMs: SideBySide;
  /** The worst PING round trip another client (a process of its own) saw while the renewal ran, ms. */
  worstOtherClientMs: SideBySide;
  /** The 99th percentile of those round trips, ms. */
  p99OtherClientMs: SideBySide;
  /** How many PINGs that client got answered while the renewal ran: Redis served it in between. */
  otherClientPings: SideBySide;
  /** The control: the worst round trip of the same client for as long again with no renewal running, ms. */
  worstIdleClientMs: SideBySide;
}

export interface StoreCostResult {
  baselineCommit: string;
  redisVersion: string;
  rounds: number;
  acquire: AcquireCostRow[];
  renewal: RenewalRow[];
  durationMs: number;
}

type StoreModule = { RedisStore: new (client: Redis, options: { keyPrefix: string; windowMs?: number }) => Store };
type ScriptsModule = { luaScripts: () => Readonly<Record<string, string>> };

/** A store on a client of its own, and how to close both. */
interface OpenStore {
  store: Store;
  close: () => Promise<void>;
}

interface DesignUnderTest {
  design: Design;
  open: (keyPrefix: string) => OpenStore;
  acquireSha: string;
  releaseSha: string;
  renewSha: string;
}

const BASELINE_DIR = join(REPO_ROOT, 'loadtest', 'results', `baseline-${BASELINE_COMMIT}`);
/** Budgets far above what the run books: every deployment is budgeted (its window is read) and always fits. */
const BIG_BUDGET = 1_000_000_000;
const LEASE_MS = 600_000;
/** Client command timeout in the bench (the stores' own is 1 s). */
const BENCH_COMMAND_TIMEOUT_MS = 15_000;
/** Acquires in flight at once while the renewal's leases are set up. */
const SETUP_CONCURRENCY = 200;

const sha1 = (text: string) => createHash('sha1').update(text).digest('hex');

function sideBySide(rounds: Record<Design, number[]>): SideBySide {
  const current = median(rounds.current);
  const previous = median(rounds.previous);
  return { current, previous, ratio: current > 0 ? previous / current : Number.NaN, rounds };
}

function emptyRounds(): Record<Design, number[]> {
  return { current: [], previous: [] };
}

/** The store of BASELINE_COMMIT, extracted into a git-ignored folder inside the repo (its imports resolve from node_modules). */
async function loadBaseline(): Promise<{ store: StoreModule; scripts: ScriptsModule }> {
  const storeDir = join(BASELINE_DIR, 'shared', 'store');
  if (!existsSync(join(storeDir, 'redis-store.ts'))) {
    mkdirSync(BASELINE_DIR, { recursive: true });
    const archive = execFileSync('git', ['-C', REPO_ROOT, 'archive', BASELINE_COMMIT, 'shared/store'], { maxBuffer: 64 * 1024 * 1024 });
    execFileSync('tar', ['-x', '-C', BASELINE_DIR], { input: archive });
  }
  const store = (await import(pathToFileURL(join(storeDir, 'redis-store.ts')).href)) as StoreModule;
  const scripts = (await import(pathToFileURL(join(storeDir, 'lua-scripts.ts')).href)) as ScriptsModule;
  return { store, scripts };
}

async function designsUnderTest(url: string): Promise<DesignUnderTest[]> {
  const current = {
    store: (await import('../../shared/store/redis-store.ts')) as unknown as StoreModule,
    scripts: (await import('../../shared/store/lua-scripts.ts')) as unknown as ScriptsModule,
  };
  const previous = await loadBaseline();
  return (
    [
      ['current', current],
      ['previous', previous],
    ] as const
  ).map(([design, { store, scripts }]) => {
    const lua = scripts.luaScripts();
    return {
      design,
      open: (keyPrefix: string) => {
        // The stores' client settings, but a command timeout the previous design's 20 000-lease renewal
        // (one script of several hundred ms on a busy machine) stays within.
        const client = new Redis(url, { ...STORE_REDIS_OPTIONS, commandTimeout: BENCH_COMMAND_TIMEOUT_MS });
        client.on('error', () => {});
        const opened = new store.RedisStore(client, { keyPrefix, windowMs: 60_000 });
        return {
          store: opened,
          close: async () => {
            await opened.close();
            client.disconnect();
          },
        };
      },
      acquireSha: sha1(lua.acquire ?? ''),
      releaseSha: sha1(lua.release ?? ''),
      renewSha: sha1(lua.renew ?? ''),
    };
  });
}

function layout(name: string, deployments: number): PoolLayout {
  return {
    name,
    strategy: 'least-requests',
    deployments: Array.from({ length: deployments }, (_, i) => ({
      id: `deployment-${i}`,
      priority: 1,
      weight: 1,
      tpm: BIG_BUDGET,
      rpm: BIG_BUDGET,
    })),
  };
}

interface SlowlogEntry {
  durationUs: number;
  sha: string;
}

/** Every command Redis ran since the last reset (slowlog-log-slower-than 0), oldest first. */
async function slowlog(admin: Redis): Promise<SlowlogEntry[]> {
  const raw = (await admin.call('SLOWLOG', 'GET', '-1')) as unknown[][];
  return raw
    .map((entry) => {
      const args = (entry[3] as unknown[]).map(String);
      return { durationUs: Number(entry[2]), sha: args[0]?.toUpperCase() === 'EVALSHA' ? (args[1] ?? '') : '' };
    })
    .reverse();
}

function ofScript(entries: readonly SlowlogEntry[], sha: string): number[] {
  return entries.filter((entry) => entry.sha === sha).map((entry) => entry.durationUs);
}

function cpuUs(): number {
  const { user, system } = process.cpuUsage();
  return user + system;
}

async function measureAcquire(
  admin: Redis,
  designs: readonly DesignUnderTest[],
  deployments: number,
  pairs: number,
  round: number,
): Promise<Record<Design, { acquire: number[]; release: number[]; cpuPerPair: number }>> {
  const out = {} as Record<Design, { acquire: number[]; release: number[]; cpuPerPair: number }>;
  // Alternate which design goes first, so neither always runs on a warmer (or busier) machine.
  const order = round % 2 === 0 ? designs : [...designs].reverse();
  for (const design of order) {
    const { store, close } = design.open(`cost:${randomUUID()}:`);
    try {
      const pool = layout(`acquire-${deployments}`, deployments);
      // Warm up: scripts loaded (EVALSHA from here on), windows and keys exist, the JIT has seen the path.
      for (let i = 0; i < 20; i++) {
        const result = await store.acquire({ pool, leaseId: randomUUID(), leaseMs: LEASE_MS, estimatedTokens: 100 });
        if (result.ok) await store.release(result.lease, 100);
      }
      await admin.call('SLOWLOG', 'RESET');
      const cpuBefore = cpuUs();
      for (let i = 0; i < pairs; i++) {
        const result = await store.acquire({ pool, leaseId: randomUUID(), leaseMs: LEASE_MS, estimatedTokens: 100 });
        if (!result.ok) throw new Error(`store-cost: ${design.design} refused an acquire at ${deployments} deployments`);
        await store.release(result.lease, 100);
      }
      const cpuPerPair = (cpuUs() - cpuBefore) / pairs;
      const entries = await slowlog(admin);
      out[design.design] = { acquire: ofScript(entries, design.acquireSha), release: ofScript(entries, design.releaseSha), cpuPerPair };
    } finally {
      await close();
    }
  }
  return out;
}

/**
 * Another client: a separate Node process that sends PING after PING on a connection of its own (so
 * this process's command building and GC do not count against it) and, told to stop on stdin, prints
 * the worst round trip, its 99th percentile and how many it made since it was told to start.
 */
const PROBER_SOURCE = `
const net = require('node:net');
const socket = net.connect(Number(process.argv[1]), '127.0.0.1');
let measuring = false, stopping = false, sentAt = 0, buffered = '';
let took = [];
const send = () => { sentAt = performance.now(); socket.write('PING\\r\\n'); };
socket.on('connect', () => { socket.setNoDelay(true); process.stdout.write('ready\\n'); send(); });
socket.on('data', (chunk) => {
  buffered += chunk.toString();
  while (buffered.includes('\\r\\n')) {
    buffered = buffered.slice(buffered.indexOf('\\r\\n') + 2);
    if (measuring) took.push(performance.now() - sentAt);
    if (stopping) {
      took.sort((a, b) => a - b);
      const p99 = took.length ? took[Math.min(took.length - 1, Math.floor(took.length * 0.99))] : 0;
      process.stdout.write(JSON.stringify({ worstMs: took.length ? took[took.length - 1] : 0, p99Ms: p99, pings: took.length }) + '\\n');
      socket.destroy();
      return;
    }
    setImmediate(send);
  }
});
process.stdin.setEncoding('utf8');
process.stdin.on('data', (text) => {
  if (text.includes('start')) { measuring = true; took = []; }
  if (text.includes('stop')) stopping = true;
});
`;

interface ProbeFigures {
  worstMs: number;
  p99Ms: number;
  pings: number;
}

class Prober {
  readonly #child: ChildProcess;
  readonly #lines: AsyncIterator<string>;

  constructor(port: number) {
    this.#child = spawn(process.execPath, ['-e', PROBER_SOURCE, String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.#lines = createInterface({ input: this.#child.stdout! })[Symbol.asyncIterator]();
  }

  async #line(): Promise<string> {
    const next = await this.#lines.next();
    if (next.done) throw new Error('store-cost: the prober ended early');
    return next.value;
  }

  async start(): Promise<void> {
    await this.#line(); // ready
    this.#child.stdin!.write('start\n');
    // Let it make a few round trips first, so its own start-up is not what it measures.
    await sleep(20);
  }

  async stop(): Promise<ProbeFigures> {
    this.#child.stdin!.write('stop\n');
    try {
      return JSON.parse(await this.#line()) as ProbeFigures;
    } finally {
      await stopChild(this.#child, 1000, 'SIGKILL');
    }
  }
}

/** Holds `count` leases of one pool on a store: the state a renewal round pushes. */
async function holdLeases(store: Store, pool: PoolLayout, count: number): Promise<Lease[]> {
  const leases: Lease[] = [];
  for (let done = 0; done < count; done += SETUP_CONCURRENCY) {
    const results = await Promise.all(
      Array.from({ length: Math.min(SETUP_CONCURRENCY, count - done) }, () =>
        store.acquire({ pool, leaseId: randomUUID(), leaseMs: LEASE_MS, estimatedTokens: 0 }),
      ),
    );
    for (const result of results) {
      if (!result.ok) throw new Error('store-cost: a lease for the renewal was refused');
      leases.push(result.lease);
    }
  }
  return leases;
}

interface RenewalSample {
  longestUs: number;
  medianUs: number;
  totalUs: number;
  commands: number;
  wallMs: number;
  worstOtherMs: number;
  p99OtherMs: number;
  otherPings: number;
  worstIdleMs: number;
}

async function measureRenewal(admin: Redis, port: number, store: Store, sha: string, leases: readonly Lease[]): Promise<RenewalSample> {
  const prober = new Prober(port);
  await prober.start();
  await admin.call('SLOWLOG', 'RESET');
  const started = performance.now();
  let wallMs: number;
  let other: ProbeFigures;
  try {
    await store.renew(leases, LEASE_MS);
  } finally {
    // Stopped whatever the renewal came to: the prober would otherwise PING on for good.
    wallMs = performance.now() - started;
    other = await prober.stop();
  }
  // The control: the same client for as long again with nothing else running, so its figures can be
  // told apart from what a busy machine does to any process's round trips.
  const control = new Prober(port);
  await control.start();
  await sleep(Math.max(1, wallMs));
  const idle = await control.stop();
  const renewals = ofScript(await slowlog(admin), sha);
  return {
    longestUs: Math.max(0, ...renewals),
    medianUs: median(renewals),
    totalUs: renewals.reduce((sum, us) => sum + us, 0),
    commands: renewals.length,
    wallMs,
    worstOtherMs: other.worstMs,
    p99OtherMs: other.p99Ms,
    otherPings: other.pings,
    worstIdleMs: idle.worstMs,
  };
}

function mean(values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : values.reduce((sum, v) => sum + v, 0) / values.length;
}

export async function measureStoreCost(options: StoreCostOptions = {}): Promise<StoreCostResult> {
  const started = performance.now();
  const rounds = options.rounds ?? 3;
  const sizes = options.deployments ?? [3, 10, 30, 100];
  const pairs = options.pairs ?? 200;
  const leaseCounts = options.leases ?? [5000, 20_000];
  const renewalDeployments = options.renewalDeployments ?? 10;
  const log = options.log ?? (() => {});

  const dataDir = mkdtempSync(join(tmpdir(), 'spillway-store-cost-'));
  const binary = options.redisBinary ?? 'redis-server';
  const processes = options.processes ?? new ProcessSet();
  const redis = await launchRedis(binary, dataDir, (args) => processes.spawn('store-cost redis', binary, args));
  const admin = new Redis(redis.url);
  const opened: OpenStore[] = [];
  try {
    await admin.config('SET', 'slowlog-log-slower-than', '0');
    await admin.config('SET', 'slowlog-max-len', '100000');
    const info = await admin.info('server');
    const redisVersion = /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
    const designs = await designsUnderTest(redis.url);

    const acquire: AcquireCostRow[] = [];
    for (const deployments of sizes) {
      const acquireMeans = emptyRounds();
      const acquireMedians = emptyRounds();
      const releaseMeans = emptyRounds();
      const cpu = emptyRounds();
      for (let round = 0; round < rounds; round++) {
        const figures = await measureAcquire(admin, designs, deployments, pairs, round);
        for (const design of ['current', 'previous'] as const) {
          acquireMeans[design].push(mean(figures[design].acquire));
          acquireMedians[design].push(median(figures[design].acquire));
          releaseMeans[design].push(mean(figures[design].release));
          cpu[design].push(figures[design].cpuPerPair);
        }
      }
      const row: AcquireCostRow = {
        deployments,
        acquireUs: sideBySide(acquireMeans),
        acquireMedianUs: sideBySide(acquireMedians),
        releaseUs: sideBySide(releaseMeans),
        clientCpuUsPerPair: sideBySide(cpu),
      };
      acquire.push(row);
      log(
        `acquire at ${deployments} deployments: ${row.acquireUs.current.toFixed(1)} µs (previous ${row.acquireUs.previous.toFixed(1)} µs)`,
      );
    }

    const renewal: RenewalRow[] = [];
    for (const count of leaseCounts) {
      const pool = layout(`renewal-${count}`, renewalDeployments);
      const held = await Promise.all(
        designs.map(async (design) => {
          const open = design.open(`cost:${randomUUID()}:`);
          opened.push(open);
          const { store } = open;
          const leases = await holdLeases(store, pool, count);
          // Warm up: the renew script is loaded (EVALSHA from here on).
          await store.renew(leases.slice(0, 1), LEASE_MS);
          return { design, store, leases };
        }),
      );
      const samples = { current: [] as RenewalSample[], previous: [] as RenewalSample[] };
      for (let round = 0; round < rounds; round++) {
        const order = round % 2 === 0 ? held : [...held].reverse();
        for (const { design, store, leases } of order)
          samples[design.design].push(await measureRenewal(admin, redis.port, store, design.renewSha, leases));
      }
      const pick = (figure: (sample: RenewalSample) => number) => ({
        current: samples.current.map(figure),
        previous: samples.previous.map(figure),
      });
      const row: RenewalRow = {
        leases: count,
        longestCommandUs: sideBySide(pick((s) => s.longestUs)),
        medianCommandUs: sideBySide(pick((s) => s.medianUs)),
        totalRedisUs: sideBySide(pick((s) => s.totalUs)),
        commands: sideBySide(pick((s) => s.commands)),
        wallMs: sideBySide(pick((s) => s.wallMs)),
        worstOtherClientMs: sideBySide(pick((s) => s.worstOtherMs)),
        p99OtherClientMs: sideBySide(pick((s) => s.p99OtherMs)),
        otherClientPings: sideBySide(pick((s) => s.otherPings)),
        worstIdleClientMs: sideBySide(pick((s) => s.worstIdleMs)),
      };
      renewal.push(row);
      log(
        `renewal of ${count} leases: longest command ${row.longestCommandUs.current} µs (previous ${row.longestCommandUs.previous} µs), ` +
          `another client waited up to ${row.worstOtherClientMs.current.toFixed(2)} ms (previous ${row.worstOtherClientMs.previous.toFixed(2)} ms)`,
      );
      // Free the leases before the next size: its setup then starts from an empty Redis.
      await Promise.all(opened.splice(0).map(({ close }) => close()));
      await admin.flushall();
    }
    return { baselineCommit: BASELINE_COMMIT, redisVersion, rounds, acquire, renewal, durationMs: performance.now() - started };
  } finally {
    await Promise.all(opened.map(({ close }) => close()));
    admin.disconnect();
    await stopChild(redis.child.process, 2000);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

function printTable(result: StoreCostResult): void {
  const f = (value: number, digits = 1) => value.toFixed(digits);
  console.log(
    `store cost: current store vs ${result.baselineCommit} (Redis ${result.redisVersion}, medians of ${result.rounds} interleaved rounds)`,
  );
  console.log('deployments | acquire µs current / previous (×) | median µs | release µs | client CPU µs per pair');
  for (const row of result.acquire) {
    console.log(
      `${String(row.deployments).padStart(11)} | ${f(row.acquireUs.current)} / ${f(row.acquireUs.previous)} (×${f(row.acquireUs.ratio, 2)})` +
        ` | ${f(row.acquireMedianUs.current)} / ${f(row.acquireMedianUs.previous)}` +
        ` | ${f(row.releaseUs.current)} / ${f(row.releaseUs.previous)}` +
        ` | ${f(row.clientCpuUsPerPair.current)} / ${f(row.clientCpuUsPerPair.previous)}`,
    );
  }
  console.log(
    'leases | longest command µs current / previous | median command µs | total Redis µs | commands | renew wall ms | other client: worst ms | p99 ms | PINGs answered | control worst ms',
  );
  for (const row of result.renewal) {
    console.log(
      `${String(row.leases).padStart(6)} | ${f(row.longestCommandUs.current, 0)} / ${f(row.longestCommandUs.previous, 0)}` +
        ` | ${f(row.medianCommandUs.current, 0)} / ${f(row.medianCommandUs.previous, 0)}` +
        ` | ${f(row.totalRedisUs.current, 0)} / ${f(row.totalRedisUs.previous, 0)}` +
        ` | ${f(row.commands.current, 0)} / ${f(row.commands.previous, 0)}` +
        ` | ${f(row.wallMs.current)} / ${f(row.wallMs.previous)}` +
        ` | ${f(row.worstOtherClientMs.current, 2)} / ${f(row.worstOtherClientMs.previous, 2)}` +
        ` | ${f(row.p99OtherClientMs.current, 2)} / ${f(row.p99OtherClientMs.previous, 2)}` +
        ` | ${f(row.otherClientPings.current, 0)} / ${f(row.otherClientPings.previous, 0)}` +
        ` | ${f(row.worstIdleClientMs.current, 2)} / ${f(row.worstIdleClientMs.previous, 2)}`,
    );
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const roundsAt = process.argv.indexOf('--rounds');
  const rounds = roundsAt > 0 ? Number(process.argv[roundsAt + 1]) : undefined;
  const result = await measureStoreCost({ ...(rounds ? { rounds } : {}), log: (line) => console.error(line) });
  printTable(result);
  console.log(JSON.stringify(result));
}
