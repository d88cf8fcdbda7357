/**
 * Gateway overhead benchmark: the same load, in one run, against
 *   direct      the simulator itself (latency model 0: it answers at once)
 *   nginx       nginx alone, proxying to the simulator
 *   gw1-mem     one gateway process, in-memory store (the embedded default; no Redis)
 *   gw1-redis   one gateway process with Redis (the production setup)
 *   gw3-redis   three gateway processes with Redis behind nginx
 *   [gw1-redis-info  as gw1-redis with LOG_LEVEL=info, stdout to a file: the per-request log's cost; opt-in]
 *
 *   npm run bench [-- --rounds 3 --duration 3s --concurrency 32 --rate 200 --profile --no-doc]
 *
 * Phases (each target in turn, the order rotated every round, to spread the machine's noise):
 *   1. closed loop: `concurrency` workers for `duration` per round → requests/s and latency at saturation;
 *   2. fixed rate (open model, `rate` rps) → latency at a moderate load, added latency vs direct;
 *   3. streams at `stream-rate` rps (a few tokens, ttft 0) → TTFT added vs direct.
 * CPU per request comes from /proc/<pid>/stat (utime+stime) of each process around each run; memory
 * from /proc/<pid>/status. The CPU that other processes on the machine used meanwhile is reported
 * too ("foreign cores"), as a measure of how noisy the run was.
 *
 * Writes loadtest/results/bench-<date>.json, and (unless --no-doc) the results section of
 * docs/benchmarks.md and the chart docs/benchmarks.svg.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { cpuModel, gitRevision, writeDocSection } from './lib/report-doc.ts';
import { summarizeProfile, readProfile, type ProfileSummary } from './lib/cpuprofile.ts';
import { fmt, markdownTable, pct, textTable } from './lib/format.ts';
import { childPids, cpuMs, cpuMsOf, machineBusyMs, memoryMb, ProcessSet, stopChild } from './lib/processes.ts';
import type { PreparedRequest, RunResult, RunSpec } from './lib/protocol.ts';
import { parseDuration, promptText } from './lib/scenario.ts';
import { barChart } from './lib/svg.ts';
import { median, summarize, type Summary } from './lib/stats.ts';
import {
  CLIENT_KEY,
  gatewayConfig,
  makeWorkDir,
  NGINX_MISSING,
  nginxBinary,
  REPO_ROOT,
  SIM_KEY,
  startGateway,
  startGenerator,
  startNginx,
  startRedis,
  startSimulatorProcess,
  sumStats,
  writeGatewayConfig,
} from './lib/stack.ts';

const HELP = `Gateway overhead benchmark

  npm run bench [-- options]

  --rounds N            interleaved rounds of every phase (default 3)
  --duration D          closed-loop time per target per round (default 3s)
  --concurrency N       closed-loop workers (default 32)
  --rate N              fixed-rate phase, requests/s (default 200)
  --rate-duration D     fixed-rate time per target per round (default 3s)
  --stream-rate N       streaming phase, requests/s (default 50)
  --stream-duration D   streaming time per target per round (default 2s)
  --targets LIST        comma-separated subset/superset of: ${'direct,nginx,node-proxy,gw1-mem,gw1-redis,gw3-redis,gw1-redis-info'}
                        (default: all but gw1-redis-info)
  --profile             afterwards, load one more gateway (not one of the targets) running under
                        node --cpu-prof with the same phases, and summarise its profile
  --profile-store S     redis (default) or memory: the store of that profiled gateway
  --nginx-workers N     nginx worker_processes (default 1)
  --no-doc              do not rewrite docs/benchmarks.md and docs/benchmarks.svg
  --help                this text
`;

const API_VERSION = '2024-10-21';
/** One smoke request may take this long (the targets answer in milliseconds once they are up). */
const SMOKE_TIMEOUT_MS = 10_000;
const ALL_TARGETS = ['direct', 'nginx', 'node-proxy', 'gw1-mem', 'gw1-redis', 'gw3-redis', 'gw1-redis-info'] as const;
type TargetKey = (typeof ALL_TARGETS)[number];
const DEFAULT_TARGETS: TargetKey[] = ['direct', 'nginx', 'node-proxy', 'gw1-mem', 'gw1-redis', 'gw3-redis'];
const LABELS: Record<TargetKey, string> = {
  direct: 'direct (simulator)',
  nginx: 'nginx → simulator',
  'node-proxy': 'bare Node proxy → simulator',
  'gw1-mem': '1 gateway, memory store',
  'gw1-redis': '1 gateway, Redis',
  'gw3-redis': 'nginx → 3 gateways, Redis',
  'gw1-redis-info': '1 gateway, Redis, LOG_LEVEL=info',
};

interface Target {
  key: TargetKey;
  url: string;
  apiKey: string;
  /** Path prefix: the simulator's deployment or the gateway's pool. */
  deploymentPath: string;
  gatewayPids: number[];
  nginxPids: number[];
  usesRedis: boolean;
}

interface CpuSplit {
  gateway: number;
  nginx: number;
  simulator: number;
  redis: number;
  generator: number;
  /** CPU of every other process on the machine (other users of this shared box). */
  foreign: number;
  wallMs: number;
}

interface PhaseAggregate {
  runs: RunResult[];
  cpu: CpuSplit;
}

function merge(values: number[][]): Summary | null {
  return summarize(values.flat());
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      duration: { type: 'string', default: '3s' },
      concurrency: { type: 'string', default: '32' },
      rate: { type: 'string', default: '200' },
      'rate-duration': { type: 'string', default: '3s' },
      'stream-rate': { type: 'string', default: '50' },
      'stream-duration': { type: 'string', default: '2s' },
      targets: { type: 'string' },
      profile: { type: 'boolean' },
      'profile-store': { type: 'string', default: 'redis' },
      'nginx-workers': { type: 'string', default: '1' },
      'no-doc': { type: 'boolean' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (!nginxBinary()) {
    process.stderr.write(`${NGINX_MISSING}\n`);
    return 3;
  }
  const rounds = Number(values.rounds);
  const closedMs = parseDuration(values.duration);
  const concurrency = Number(values.concurrency);
  const rate = Number(values.rate);
  const rateMs = parseDuration(values['rate-duration']);
  const streamRate = Number(values['stream-rate']);
  const streamMs = parseDuration(values['stream-duration']);
  const nginxWorkers = Number(values['nginx-workers']);
  const keys = (values.targets ? values.targets.split(',').map((t) => t.trim()) : DEFAULT_TARGETS) as TargetKey[];
  for (const key of keys) if (!ALL_TARGETS.includes(key)) throw new Error(`unknown target '${key}'; known: ${ALL_TARGETS.join(', ')}`);
  if (!(rounds >= 1 && rounds <= 10 && concurrency >= 1 && concurrency <= 1024 && rate > 0 && streamRate > 0))
    throw new Error('bad numeric option');
  const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;

  // Bounded: every phase is timed; the hard cap covers them all plus start and stop.
  const plannedMs =
    keys.length * (1500 + rounds * (closedMs + rateMs + streamMs + 3 * 1000)) +
    (values.profile ? 30_000 + rounds * (closedMs + rateMs + streamMs + 3 * 1000) : 0);
  const hardCapMs = plannedMs + 180_000;
  const processes = new ProcessSet();
  processes.capRunTime(hardCapMs);
  const log = (line: string) => process.stdout.write(`${line}\n`);
  const startedAt = new Date();
  const loadBefore = loadavg();

  try {
    const dir = makeWorkDir(processes, 'spillway-bench-');
    const resultsDir = join(REPO_ROOT, 'loadtest', 'results');
    mkdirSync(resultsDir, { recursive: true });
    const profileDir = join(resultsDir, `profile-${startedAt.toISOString().replace(/[:.]/g, '-')}`);

    const profileStore = values['profile-store'] === 'memory' ? 'memory' : 'redis';
    const needsRedis = keys.some((k) => k.includes('redis')) || (values.profile && profileStore === 'redis');
    const redis = needsRedis ? await startRedis(processes, dir) : undefined;
    const deployments = ['bench-0', 'bench-1', 'bench-2'];
    const simulator = await startSimulatorProcess(processes, dir, {
      deployments: deployments.map((name) => ({ name, completionTokens: 16 })),
      latency: { ttftMs: 0, perTokenMs: 0 },
    });
    const configFile = writeGatewayConfig(
      dir,
      'gateway',
      gatewayConfig(simulator.url, {
        bench: { strategy: 'least-requests', deployments: deployments.map((name, index) => ({ id: `d${index}`, deployment: name })) },
      }),
    );

    const targets: Target[] = [];
    const simPath = `/openai/deployments/${deployments[0]}`;
    const poolPath = '/openai/deployments/bench';
    const nginxPids = (pid: number) => [pid, ...childPids(pid)];
    for (const key of keys) {
      if (key === 'direct')
        targets.push({
          key,
          url: simulator.url,
          apiKey: SIM_KEY,
          deploymentPath: simPath,
          gatewayPids: [],
          nginxPids: [],
          usesRedis: false,
        });
      if (key === 'nginx') {
        const lb = await startNginx(processes, dir, 'nginx-sim', [Number(new URL(simulator.url).port)], nginxWorkers);
        targets.push({
          key,
          url: lb.url,
          apiKey: SIM_KEY,
          deploymentPath: simPath,
          gatewayPids: [],
          nginxPids: nginxPids(lb.child.pid),
          usesRedis: false,
        });
      }
      if (key === 'node-proxy') {
        const bare = await startGateway(processes, dir, {
          name: key,
          configFile,
          script: 'loadtest/bare-proxy.ts',
          env: { UPSTREAM: simulator.url },
        });
        targets.push({
          key,
          url: bare.url,
          apiKey: SIM_KEY,
          deploymentPath: simPath,
          gatewayPids: [bare.child.pid],
          nginxPids: [],
          usesRedis: false,
        });
      }
      if (key === 'gw1-mem' || key === 'gw1-redis' || key === 'gw1-redis-info') {
        const gw = await startGateway(processes, dir, {
          name: key,
          configFile,
          ...(key === 'gw1-mem' ? {} : { redisUrl: redis!.url }),
          logLevel: key === 'gw1-redis-info' ? 'info' : 'warn',
        });
        targets.push({
          key,
          url: gw.url,
          apiKey: CLIENT_KEY,
          deploymentPath: poolPath,
          gatewayPids: [gw.child.pid],
          nginxPids: [],
          usesRedis: key !== 'gw1-mem',
        });
      }
      if (key === 'gw3-redis') {
        const three = await Promise.all(
          [1, 2, 3].map((n) => startGateway(processes, dir, { name: `gw3-${n}`, configFile, redisUrl: redis!.url, logLevel: 'warn' })),
        );
        const lb = await startNginx(
          processes,
          dir,
          'nginx-gw3',
          three.map((g) => g.port),
          nginxWorkers,
        );
        targets.push({
          key,
          url: lb.url,
          apiKey: CLIENT_KEY,
          deploymentPath: poolPath,
          gatewayPids: three.map((g) => g.child.pid),
          nginxPids: nginxPids(lb.child.pid),
          usesRedis: true,
        });
      }
    }
    const generator = await startGenerator(processes);
    const orchestratorPid = process.pid;
    const ourPids = () => [
      ...new Set([
        orchestratorPid,
        simulator.child.pid,
        generator.child.pid!,
        ...(redis ? [redis.child.pid] : []),
        ...targets.flatMap((t) => [...t.gatewayPids, ...t.nginxPids]),
      ]),
    ];

    const chatBody = JSON.stringify({ messages: [{ role: 'user', content: promptText(400) }], max_tokens: 16 });
    const streamBody = JSON.stringify({
      messages: [{ role: 'user', content: promptText(400) }],
      max_tokens: 5,
      stream: true,
      stream_options: { include_usage: true },
    });
    const request = (target: Target, stream: boolean): PreparedRequest => ({
      name: stream ? 'chat-stream' : 'chat',
      path: `${target.deploymentPath}/chat/completions?api-version=${API_VERSION}`,
      body: stream ? streamBody : chatBody,
      stream,
      weight: 1,
    });

    // Smoke: every target answers 200 for both kinds.
    for (const target of targets) {
      for (const stream of [false, true]) {
        const r = request(target, stream);
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
    log(
      `bench: ${targets.length} targets, ${rounds} round(s); closed loop c=${concurrency} ${closedMs / 1000}s, fixed ${rate} rps ${rateMs / 1000}s, streams ${streamRate} rps ${streamMs / 1000}s`,
    );
    log(
      `machine: ${cpus().length} cores, ${cpuModel()}, node ${process.version}, load average ${loadBefore.map((v) => v.toFixed(2)).join(' ')}`,
    );

    const measure = async (target: Target, spec: RunSpec): Promise<{ result: RunResult; cpu: CpuSplit }> => {
      const pidsGateway = target.gatewayPids;
      const pidsNginx = target.nginxPids;
      const ours = ourPids();
      const before = {
        gateway: cpuMsOf(pidsGateway),
        nginx: cpuMsOf(pidsNginx),
        simulator: cpuMs(simulator.child.pid),
        redis: redis ? cpuMs(redis.child.pid) : 0,
        ours: cpuMsOf(ours),
        machine: machineBusyMs(),
        at: performance.now(),
      };
      const result = await generator.run(spec);
      const cpu: CpuSplit = {
        gateway: cpuMsOf(pidsGateway) - before.gateway,
        nginx: cpuMsOf(pidsNginx) - before.nginx,
        simulator: cpuMs(simulator.child.pid) - before.simulator,
        redis: target.usesRedis && redis ? cpuMs(redis.child.pid) - before.redis : 0,
        generator: result.generatorCpuMs,
        foreign: Math.max(0, machineBusyMs() - before.machine - (cpuMsOf(ours) - before.ours)),
        wallMs: performance.now() - before.at,
      };
      return { result, cpu };
    };
    const baseSpec = (target: Target, stream: boolean): Omit<RunSpec, 'mode'> => ({
      baseUrl: target.url,
      apiKey: target.apiKey,
      requests: [request(target, stream)],
      maxRequests: 2_000_000,
      requestTimeoutMs: 10_000,
      drainMs: 5_000,
      okStatuses: [200],
      returnSamples: true,
    });
    /**
     * One measured phase against `target`: the closed loop, the fixed rate or the streams. `times`
     * stretches it (the profiled gateway runs every round's share in one go).
     */
    const phaseSpec = (target: Target, phase: 'closed' | 'rate' | 'stream', times = 1): RunSpec => {
      if (phase === 'closed') return { ...baseSpec(target, false), mode: { kind: 'closed', concurrency, durationMs: closedMs * times } };
      const [perSecond, durationMs] = phase === 'rate' ? [rate, rateMs] : [streamRate, streamMs];
      return {
        ...baseSpec(target, phase === 'stream'),
        mode: { kind: 'open', startRate: perSecond, stages: [{ durationMs: durationMs * times, target: perSecond }], maxInFlight: 512 },
      };
    };

    // Idle cost: what each target's gateway processes burn with no traffic (timers, leases, metrics).
    const idleMs = 3000;
    const idleBefore = targets.map((t) => cpuMsOf(t.gatewayPids));
    await sleep(idleMs);
    const idleRss = new Map(
      targets
        .filter((t) => t.gatewayPids.length)
        .map((t) => [t.key, t.gatewayPids.reduce((acc, pid) => acc + memoryMb(pid).rss, 0) / t.gatewayPids.length]),
    );
    const idleCores = new Map(
      targets.map((t, index) => [t.key, t.gatewayPids.length ? (cpuMsOf(t.gatewayPids) - idleBefore[index]!) / idleMs : null]),
    );

    // Warm-up: JIT, connection pools. Not recorded.
    for (const target of targets) {
      await generator.run({ ...baseSpec(target, false), mode: { kind: 'closed', concurrency, durationMs: 1000 }, returnSamples: false });
      await generator.run({ ...baseSpec(target, true), mode: { kind: 'closed', concurrency: 4, durationMs: 300 }, returnSamples: false });
    }

    const empty = (): PhaseAggregate => ({
      runs: [],
      cpu: { gateway: 0, nginx: 0, simulator: 0, redis: 0, generator: 0, foreign: 0, wallMs: 0 },
    });
    const phases = {
      closed: new Map<TargetKey, PhaseAggregate>(),
      rate: new Map<TargetKey, PhaseAggregate>(),
      stream: new Map<TargetKey, PhaseAggregate>(),
    };
    for (const target of targets) for (const phase of Object.values(phases)) phase.set(target.key, empty());
    const add = (phase: Map<TargetKey, PhaseAggregate>, key: TargetKey, run: { result: RunResult; cpu: CpuSplit }) => {
      const aggregate = phase.get(key)!;
      aggregate.runs.push(run.result);
      for (const field of Object.keys(aggregate.cpu) as (keyof CpuSplit)[]) aggregate.cpu[field] += run.cpu[field];
    };
    const rotated = (round: number) => targets.map((_, index) => targets[(index + round) % targets.length]!);

    for (let round = 0; round < rounds; round++) {
      for (const target of rotated(round)) {
        const run = await measure(target, phaseSpec(target, 'closed'));
        add(phases.closed, target.key, run);
        log(
          `  round ${round + 1} closed  ${target.key.padEnd(15)} ${fmt(run.result.rps, 0).padStart(6)} rps  p50 ${fmt(run.result.latencyByStatus['200']?.p50, 2)} ms  errors ${run.result.errors}  foreign ${fmt(run.cpu.foreign / run.cpu.wallMs, 2)} cores`,
        );
      }
      for (const target of rotated(round)) {
        const run = await measure(target, phaseSpec(target, 'rate'));
        add(phases.rate, target.key, run);
        log(
          `  round ${round + 1} ${rate} rps ${target.key.padEnd(15)} p50 ${fmt(run.result.latencyByStatus['200']?.p50, 2)} ms  p99 ${fmt(run.result.latencyByStatus['200']?.p99, 2)} ms  errors ${run.result.errors}`,
        );
      }
      for (const target of rotated(round)) {
        const run = await measure(target, phaseSpec(target, 'stream'));
        add(phases.stream, target.key, run);
        log(
          `  round ${round + 1} streams ${target.key.padEnd(15)} TTFT p50 ${fmt(run.result.ttft?.p50, 2)} ms  p99 ${fmt(run.result.ttft?.p99, 2)} ms  errors ${run.result.errors}`,
        );
      }
    }

    const memory: Record<string, { rss: number; peak: number }[]> = {};
    for (const target of targets) memory[target.key] = target.gatewayPids.map((pid) => memoryMb(pid));
    const upstream = sumStats(await simulator.stats());

    // ---------------------------------------------------------------- figures per target
    interface Row {
      key: TargetKey;
      label: string;
      /** Aggregate over the rounds: all completed / all time. */
      closedRps: number;
      /** Median and best round: the best is the round least disturbed by other processes. */
      closedRpsMedian: number;
      closedRpsBest: number;
      idleCores: number | null;
      closed: Summary | null;
      closedErrors: number;
      rateAchieved: number;
      rateLatency: Summary | null;
      rateErrors: number;
      ttft: Summary | null;
      streamErrors: number;
      /** CPU µs per request at the fixed rate (gateway processes), where idle costs weigh in. */
      gatewayUsPerRequest: number | null;
      /** nginx and Redis CPU µs per request in the closed loop: their cost at capacity (at 200/s their idle timers dominate). */
      nginxUsPerRequest: number | null;
      redisUsPerRequest: number | null;
      gatewayUsPerRequestClosed: number | null;
      gatewayCoresClosed: number | null;
      rssMb: number | null;
      rssIdleMb: number | null;
      foreignCores: number;
      generatorCoresClosed: number;
    }
    const rows: Row[] = targets.map((target) => {
      const closed = phases.closed.get(target.key)!;
      const rated = phases.rate.get(target.key)!;
      const streamed = phases.stream.get(target.key)!;
      const sumOf = (runs: RunResult[], pick: (r: RunResult) => number) => runs.reduce((acc, r) => acc + pick(r), 0);
      const closedCompleted = sumOf(closed.runs, (r) => r.completed);
      const ratedCompleted = sumOf(rated.runs, (r) => r.completed);
      const perRequest = (ms: number, count: number, applies: boolean) => (applies && count > 0 ? (ms * 1000) / count : null);
      const mem = memory[target.key] ?? [];
      const allWall = closed.cpu.wallMs + rated.cpu.wallMs + streamed.cpu.wallMs;
      return {
        key: target.key,
        label: LABELS[target.key],
        closedRps: sumOf(closed.runs, (r) => r.completedInLoad) / (sumOf(closed.runs, (r) => r.loadMs) / 1000),
        closedRpsMedian: median(closed.runs.map((r) => r.rps)),
        closedRpsBest: Math.max(...closed.runs.map((r) => r.rps)),
        idleCores: idleCores.get(target.key) ?? null,
        closed: merge(closed.runs.map((r) => r.samples?.latency200 ?? [])),
        closedErrors: sumOf(closed.runs, (r) => r.errors),
        rateAchieved: sumOf(rated.runs, (r) => r.completed) / (sumOf(rated.runs, (r) => r.loadMs) / 1000),
        rateLatency: merge(rated.runs.map((r) => r.samples?.latency200 ?? [])),
        rateErrors: sumOf(rated.runs, (r) => r.errors),
        ttft: merge(streamed.runs.map((r) => r.samples?.ttft ?? [])),
        streamErrors: sumOf(streamed.runs, (r) => r.errors),
        gatewayUsPerRequest: perRequest(rated.cpu.gateway, ratedCompleted, target.gatewayPids.length > 0),
        nginxUsPerRequest: perRequest(closed.cpu.nginx, closedCompleted, target.nginxPids.length > 0),
        redisUsPerRequest: perRequest(closed.cpu.redis, closedCompleted, target.usesRedis),
        gatewayUsPerRequestClosed: perRequest(closed.cpu.gateway, closedCompleted, target.gatewayPids.length > 0),
        gatewayCoresClosed: target.gatewayPids.length > 0 ? closed.cpu.gateway / closed.cpu.wallMs : null,
        rssMb: mem.length ? mem.reduce((acc, m) => acc + m.rss, 0) / mem.length : null,
        rssIdleMb: idleRss.get(target.key) ?? null,
        foreignCores: (closed.cpu.foreign + rated.cpu.foreign + streamed.cpu.foreign) / allWall,
        generatorCoresClosed: closed.cpu.generator / closed.cpu.wallMs,
      };
    });
    const byKey = new Map(rows.map((row) => [row.key, row]));
    const direct = byKey.get('direct');
    const added = (row: Row, pick: (s: Summary) => number, of: 'rateLatency' | 'ttft') => {
      const base = direct?.[of];
      const mine = row[of];
      return base && mine ? pick(mine) - pick(base) : null;
    };

    // ---------------------------------------------------------------- verdicts
    interface Verdict {
      goal: string;
      measured: string;
      result: 'PASS' | 'FAIL' | 'n/a' | 'info';
    }
    const verdicts: Verdict[] = [];
    for (const key of ['gw1-mem', 'gw1-redis', 'gw3-redis'] as TargetKey[]) {
      const row = byKey.get(key);
      if (!row || !direct) continue;
      const p50 = added(row, (s) => s.p50, 'rateLatency');
      const p99 = added(row, (s) => s.p99, 'rateLatency');
      verdicts.push({
        goal: `${row.label}: added median latency < 1 ms at ${rate} rps`,
        measured: `${fmt(p50, 2)} ms`,
        result: p50 === null ? 'n/a' : p50 < 1 ? 'PASS' : 'FAIL',
      });
      verdicts.push({
        goal: `${row.label}: added p99 latency < 5 ms at ${rate} rps`,
        measured: `${fmt(p99, 2)} ms`,
        result: p99 === null ? 'n/a' : p99 < 5 ? 'PASS' : 'FAIL',
      });
    }
    const nginxRow = byKey.get('nginx');
    for (const key of ['gw1-mem', 'gw1-redis'] as TargetKey[]) {
      const row = byKey.get(key);
      if (!row || !nginxRow) continue;
      const ratio = row.closedRpsMedian / nginxRow.closedRpsMedian;
      verdicts.push({
        goal: `${row.label}: requests/s ≥ ½ of nginx alone`,
        measured: `${fmt(row.closedRpsMedian, 0)} vs ${fmt(nginxRow.closedRpsMedian, 0)} rps (×${fmt(ratio, 2)})`,
        result: ratio >= 0.5 ? 'PASS' : 'FAIL',
      });
    }
    const gw1 = byKey.get('gw1-redis');
    const gw3 = byKey.get('gw3-redis');
    const cores = cpus().length;
    if (gw1 && gw3) {
      const ratio = gw3.closedRpsMedian / gw1.closedRpsMedian;
      verdicts.push({
        goal: `3 instances scale with the cores (${cores} here, shared with the load generator, simulator, nginx and Redis)`,
        measured: `×${fmt(ratio, 2)} the rps of one instance`,
        result: cores <= 2 ? 'info' : ratio >= Math.min(3, (cores - 1) / 2) ? 'PASS' : 'FAIL',
      });
    }

    // ---------------------------------------------------------------- profile
    // A separate gateway, so the profiler's overhead touches none of the figures above. Its summary
    // covers the loaded phases only (start-up and warm-up left out).
    let profile: (ProfileSummary & { store: string; requests: number; procCpuMs: number }) | undefined;
    if (values.profile) {
      const gw = await startGateway(processes, dir, {
        name: 'gw-profiled',
        configFile,
        ...(profileStore === 'redis' ? { redisUrl: redis!.url } : {}),
        logLevel: 'warn',
        nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`],
      });
      const target: Target = {
        key: profileStore === 'redis' ? 'gw1-redis' : 'gw1-mem',
        url: gw.url,
        apiKey: CLIENT_KEY,
        deploymentPath: poolPath,
        gatewayPids: [gw.child.pid],
        nginxPids: [],
        usesRedis: profileStore === 'redis',
      };
      await generator.run({ ...baseSpec(target, false), mode: { kind: 'closed', concurrency, durationMs: 1000 }, returnSamples: false });
      const fromUs = Number(process.hrtime.bigint() / 1000n);
      const cpuBefore = cpuMs(gw.child.pid);
      let requests = 0;
      for (const phase of ['closed', 'rate', 'stream'] as const)
        requests += (await generator.run({ ...phaseSpec(target, phase, rounds), returnSamples: false })).completed;
      const procCpuMs = cpuMs(gw.child.pid) - cpuBefore;
      await stopChild(gw.child.process, 20_000);
      const file = existsSync(profileDir) ? readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile')) : undefined;
      if (file)
        profile = {
          ...summarizeProfile(readProfile(join(profileDir, file)), 15, fromUs),
          store: profileStore,
          requests,
          procCpuMs: Math.round(procCpuMs),
        };
      else log(`no .cpuprofile found in ${profileDir}`);
    }
    await generator.stop();

    // ---------------------------------------------------------------- output
    const headerMain = [
      'target',
      `rps (c=${concurrency}) median`,
      'best round',
      'p50 ms',
      'p95 ms',
      'p99 ms',
      `p50 @${rate}/s`,
      `p99 @${rate}/s`,
      '+p50 ms',
      '+p99 ms',
      'TTFT p50',
      'TTFT p99',
      '+TTFT p50',
      'errors',
    ];
    const mainRows = rows.map((row) => [
      row.label,
      fmt(row.closedRpsMedian, 0),
      fmt(row.closedRpsBest, 0),
      fmt(row.closed?.p50, 2),
      fmt(row.closed?.p95, 2),
      fmt(row.closed?.p99, 2),
      fmt(row.rateLatency?.p50, 2),
      fmt(row.rateLatency?.p99, 2),
      row.key === 'direct'
        ? '–'
        : fmt(
            added(row, (s) => s.p50, 'rateLatency'),
            2,
          ),
      row.key === 'direct'
        ? '–'
        : fmt(
            added(row, (s) => s.p99, 'rateLatency'),
            2,
          ),
      fmt(row.ttft?.p50, 2),
      fmt(row.ttft?.p99, 2),
      row.key === 'direct'
        ? '–'
        : fmt(
            added(row, (s) => s.p50, 'ttft'),
            2,
          ),
      String(row.closedErrors + row.rateErrors + row.streamErrors),
    ]);
    const headerCost = [
      'target',
      `gateway CPU µs/req @${rate}/s`,
      'gateway CPU µs/req (closed)',
      'gateway cores (closed)',
      'gateway cores idle',
      'nginx µs/req (closed)',
      'Redis µs/req (closed)',
      'RSS MB/instance idle',
      'RSS MB/instance after',
      'generator cores (closed)',
      'foreign cores',
    ];
    const costRows = rows.map((row) => [
      row.label,
      fmt(row.gatewayUsPerRequest, 0),
      fmt(row.gatewayUsPerRequestClosed, 0),
      fmt(row.gatewayCoresClosed, 2),
      fmt(row.idleCores, 3),
      fmt(row.nginxUsPerRequest, 0),
      fmt(row.redisUsPerRequest, 0),
      fmt(row.rssIdleMb, 0),
      fmt(row.rssMb, 0),
      fmt(row.generatorCoresClosed, 2),
      fmt(row.foreignCores, 2),
    ]);
    log('');
    log(textTable(headerMain, mainRows));
    log('');
    log(textTable(headerCost, costRows));
    log('');
    log(
      textTable(
        ['goal', 'measured', 'result'],
        verdicts.map((v) => [v.goal, v.measured, v.result]),
      ),
    );
    if (profile) {
      log(
        `\nprofile of a separate gateway (${profile.store} store), loaded phases only: ${profile.requests} requests; main thread busy ${profile.busyMs} ms (sampled) vs ${profile.procCpuMs} ms CPU from /proc (all threads): top self time`,
      );
      log(
        textTable(
          ['share', 'ms', 'function', 'where'],
          profile.selfByFunction.map((l) => [pct(l.share, 1), fmt(l.ms, 0), l.name, l.where]),
        ),
      );
      log('');
      log(
        textTable(
          ['share', 'ms', 'area (self time)'],
          profile.selfByArea.map((l) => [pct(l.share, 1), fmt(l.ms, 0), l.name]),
        ),
      );
    }
    log(
      `\nupstream (simulator) totals: received ${upstream.received}, served ${upstream.served}, 429 ${upstream.throttled}, failed ${upstream.failed}`,
    );

    const machine = {
      cores: cores,
      cpu: cpuModel(),
      node: process.version,
      nginx:
        spawnSync(nginxBinary()!, ['-v'], { encoding: 'utf8' })
          .stderr.trim()
          .replace(/^nginx version: /, '') || 'nginx',
      loadAverageBefore: loadBefore,
      loadAverageAfter: loadavg(),
    };
    const output = {
      command,
      at: startedAt.toISOString(),
      revision: gitRevision(),
      machine,
      settings: { rounds, closedMs, concurrency, rate, rateMs, streamRate, streamMs, nginxWorkers, targets: keys },
      rows,
      verdicts,
      profile,
      runs: Object.fromEntries(
        Object.entries(phases).map(([phase, map]) => [
          phase,
          Object.fromEntries(
            [...map].map(([key, agg]) => [key, { cpu: agg.cpu, runs: agg.runs.map(({ samples: _samples, ...rest }) => rest) }]),
          ),
        ]),
      ),
    };
    const file = join(resultsDir, `bench-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, JSON.stringify(output, null, 2));
    log(`\nresult: ${file}`);

    if (!values['no-doc']) {
      const svg = barChart(
        `Spillway gateway overhead — ${startedAt.toISOString().slice(0, 10)}, ${cores} cores (shared), node ${process.version}`,
        rows.map((r) => r.label),
        [
          {
            title: `Throughput, closed loop at concurrency ${concurrency} (higher is better)`,
            unit: 'rps',
            series: [
              { name: 'median round', color: '#4e79a7', values: rows.map((r) => r.closedRpsMedian) },
              { name: 'best round', color: '#a0cbe8', values: rows.map((r) => r.closedRpsBest) },
            ],
          },
          {
            title: `Latency at a fixed ${rate} requests/s (lower is better)`,
            unit: 'ms',
            series: [
              { name: 'p50', color: '#59a14f', values: rows.map((r) => r.rateLatency?.p50 ?? null) },
              { name: 'p99', color: '#e15759', values: rows.map((r) => r.rateLatency?.p99 ?? null) },
            ],
          },
        ],
        'Simulator latency 0. Generated by loadtest/bench.ts; see docs/benchmarks.md for the machine and the caveats.',
      );
      writeFileSync(join(REPO_ROOT, 'docs', 'benchmarks.svg'), svg);
      const section = [
        `Command: \`${command}\`  `,
        `Date: ${startedAt.toISOString()}  `,
        `Revision: ${output.revision}  `,
        `Machine: ${cores} cores (${machine.cpu}), node ${machine.node}, ${machine.nginx}; load average before ${loadBefore.map((v) => v.toFixed(2)).join(' ')}, after ${machine.loadAverageAfter.map((v) => v.toFixed(2)).join(' ')}  `,
        `Settings: ${rounds} interleaved round(s); closed loop ${concurrency} workers × ${closedMs / 1000} s per target per round; fixed rate ${rate} rps × ${rateMs / 1000} s; streams ${streamRate} rps × ${streamMs / 1000} s (5 tokens, include_usage); nginx ${nginxWorkers} worker(s).`,
        '',
        '![throughput and latency per target](benchmarks.svg)',
        '',
        '### Throughput and latency',
        '',
        '`+p50`/`+p99`/`+TTFT` are the differences against `direct` at the same fixed rate (added latency).',
        '',
        markdownTable(headerMain, mainRows),
        '',
        '### Cost',
        '',
        "`foreign cores`: CPU that processes outside this benchmark used meanwhile, in cores (the noise of the shared machine); `generator cores`: the load generator's own use (near 1.0 means it, not the target, limited the closed loop).",
        '',
        markdownTable(headerCost, costRows),
        '',
        '### Against the targets',
        '',
        markdownTable(
          ['goal', 'measured', 'result'],
          verdicts.map((v) => [v.goal, v.measured, v.result]),
        ),
        '',
        ...(profile
          ? [
              `### CPU profile of one gateway (${profile.store} store)`,
              '',
              `A separate gateway under \`node --cpu-prof\` (so the profiler touches none of the figures above), loaded with the same phases after its own warm-up: ${profile.requests} requests. ` +
                `${profile.busyMs} ms of the main thread sampled as busy, against ${profile.procCpuMs} ms of CPU in /proc for the same window (all threads). ` +
                "The two measure different things: V8's sampler reads the main thread's stack by the wall clock, so time the process sits preempted lands on whatever ran last, mostly the native socket writes (`writeUtf8String`, `writev`: each write wakes a peer, Redis, the simulator or the client, which on an oversubscribed machine often takes the core at once); /proc also counts GC helper threads and the profiler itself. " +
                'Read the socket-write rows as "socket writes and the context switches they cause", not as pure CPU.',
              '',
              'Self time by area:',
              '',
              markdownTable(
                ['share of busy', 'ms', 'area'],
                profile.selfByArea.map((l) => [pct(l.share, 1), fmt(l.ms, 0), l.name]),
              ),
              '',
              'Top functions by self time:',
              '',
              markdownTable(
                ['share of busy', 'ms', 'function', 'where'],
                profile.selfByFunction.map((l) => [pct(l.share, 1), fmt(l.ms, 0), `\`${l.name}\``, l.where]),
              ),
              '',
              "Inclusive time of the gateway's own functions:",
              '',
              markdownTable(
                ['share of busy', 'ms', 'function', 'where'],
                profile.inclusiveOwn.slice(0, 12).map((l) => [pct(l.share, 1), fmt(l.ms, 0), `\`${l.name}\``, l.where]),
              ),
              '',
            ]
          : []),
        `Raw figures: \`loadtest/results/${file.split('/').pop()}\` (not committed).`,
      ].join('\n');
      writeDoc(section);
      log('wrote docs/benchmarks.md and docs/benchmarks.svg');
    }
    return 0;
  } finally {
    await processes.stopAll();
  }
}

const START = '<!-- bench:results:start (generated by loadtest/bench.ts; edit outside these markers) -->';
const END = '<!-- bench:results:end -->';

function writeDoc(section: string): void {
  writeDocSection(join(REPO_ROOT, 'docs', 'benchmarks.md'), START, END, section, '# Benchmarks\n\n## Latest results\n\n');
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(2);
  },
);
