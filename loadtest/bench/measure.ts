/**
 * The bench's measured runs: each target in turn, phase by phase, the order rotated every round to
 * spread the machine's noise; the CPU of every process around each run, from /proc. Phase 4 (APIs)
 * is in apis.ts; it runs at the end of each round (runRounds' `afterRound`).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { cpuMs, cpuMsOf, machineBusyMs, memoryMb } from '../../shared/processes/proc-stats.ts';
import { fmt } from '../lib/format.ts';
import type { RunResult, RunSpec } from '../lib/protocol.ts';
import type { BenchOptions, TargetKey } from './options.ts';
import { benchRequest, type BenchStack, type Target } from './targets.ts';

export interface CpuSplit {
  gateway: number;
  nginx: number;
  simulator: number;
  redis: number;
  generator: number;
  /** CPU of every other process on the machine (other users of this shared box). */
  foreign: number;
  wallMs: number;
}

/** The runs of one kind against one target, and what each kind of process spent over all of them. */
export interface Aggregate {
  runs: RunResult[];
  cpu: CpuSplit;
}

export interface PhaseAggregate extends Aggregate {
  /** Each run's gateway CPU (ms), in round order: per-round ratios pair runs that were close in time. */
  gatewayCpuByRun: number[];
}

export const emptyCpu = (): CpuSplit => ({ gateway: 0, nginx: 0, simulator: 0, redis: 0, generator: 0, foreign: 0, wallMs: 0 });

export type PhaseName = 'closed' | 'rate' | 'stream';
export type Phases = Record<PhaseName, Map<TargetKey, PhaseAggregate>>;

export interface Measured {
  result: RunResult;
  cpu: CpuSplit;
}

const log = (line: string) => process.stdout.write(`${line}\n`);

export function baseSpec(target: Target, stream: boolean): Omit<RunSpec, 'mode'> {
  return {
    baseUrl: target.url,
    apiKey: target.apiKey,
    requests: [benchRequest(target, stream)],
    maxRequests: 2_000_000,
    requestTimeoutMs: 10_000,
    drainMs: 5_000,
    okStatuses: [200],
    returnSamples: true,
  };
}

/**
 * One measured phase against `target`: the closed loop, the fixed rate or the streams. `times`
 * stretches it (the profiled gateway runs every round's share in one go).
 */
export function phaseSpec(options: BenchOptions, target: Target, phase: PhaseName, times = 1): RunSpec {
  if (phase === 'closed')
    return { ...baseSpec(target, false), mode: { kind: 'closed', concurrency: options.concurrency, durationMs: options.closedMs * times } };
  const [perSecond, durationMs] = phase === 'rate' ? [options.rate, options.rateMs] : [options.streamRate, options.streamMs];
  return {
    ...baseSpec(target, phase === 'stream'),
    mode: { kind: 'open', startRate: perSecond, stages: [{ durationMs: durationMs * times, target: perSecond }], maxInFlight: 512 },
  };
}

/** One run, with the CPU each kind of process used meanwhile. */
export async function measure(stack: BenchStack, target: Target, spec: RunSpec): Promise<Measured> {
  const { simulator, redis } = stack;
  const pidsGateway = target.gatewayPids;
  const pidsNginx = target.nginxPids;
  const ours = stack.ourPids();
  const before = {
    gateway: cpuMsOf(pidsGateway),
    nginx: cpuMsOf(pidsNginx),
    simulator: cpuMs(simulator.child.pid),
    redis: redis ? cpuMs(redis.child.pid) : 0,
    ours: cpuMsOf(ours),
    machine: machineBusyMs(),
    at: performance.now(),
  };
  const result = await stack.generator.run(spec);
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
}

export interface IdleCost {
  /** Mean RSS per gateway process with no traffic, MB. */
  rss: Map<TargetKey, number>;
  /** Cores the gateway processes burn with no traffic (timers, leases, metrics); null without gateways. */
  cores: Map<TargetKey, number | null>;
}

export async function idleCost(targets: Target[]): Promise<IdleCost> {
  const idleMs = 3000;
  const before = targets.map((t) => cpuMsOf(t.gatewayPids));
  await sleep(idleMs);
  const rss = new Map(
    targets
      .filter((t) => t.gatewayPids.length)
      .map((t) => [t.key, t.gatewayPids.reduce((acc, pid) => acc + memoryMb(pid).rss, 0) / t.gatewayPids.length]),
  );
  const cores = new Map(
    targets.map((t, index) => [t.key, t.gatewayPids.length ? (cpuMsOf(t.gatewayPids) - before[index]!) / idleMs : null]),
  );
  return { rss, cores };
}

/** JIT, connection pools: one short closed loop of each kind per target, not recorded. */
export async function warmUp(stack: BenchStack, target: Target, concurrency: number): Promise<void> {
  await stack.generator.run({ ...baseSpec(target, false), mode: { kind: 'closed', concurrency, durationMs: 1000 }, returnSamples: false });
  await stack.generator.run({ ...baseSpec(target, true), mode: { kind: 'closed', concurrency: 4, durationMs: 300 }, returnSamples: false });
}

const PHASE_LINE: Record<PhaseName, (round: number, key: string, run: Measured, rate: number) => string> = {
  closed: (round, key, run) =>
    `  round ${round + 1} closed  ${key} ${fmt(run.result.rps, 0).padStart(6)} rps  p50 ${fmt(run.result.latencyByStatus['200']?.p50, 2)} ms  errors ${run.result.errors}  foreign ${fmt(run.cpu.foreign / run.cpu.wallMs, 2)} cores`,
  rate: (round, key, run, rate) =>
    `  round ${round + 1} ${rate} rps ${key} p50 ${fmt(run.result.latencyByStatus['200']?.p50, 2)} ms  p99 ${fmt(run.result.latencyByStatus['200']?.p99, 2)} ms  errors ${run.result.errors}`,
  stream: (round, key, run) =>
    `  round ${round + 1} streams ${key} TTFT p50 ${fmt(run.result.ttft?.p50, 2)} ms  p99 ${fmt(run.result.ttft?.p99, 2)} ms  errors ${run.result.errors}`,
};

/**
 * Every round: each phase against every target in turn, starting one target later each round;
 * then `afterRound` (phase 4, the APIs).
 */
export async function runRounds(stack: BenchStack, options: BenchOptions, afterRound?: (round: number) => Promise<void>): Promise<Phases> {
  const { targets } = stack;
  const empty = (): PhaseAggregate => ({ runs: [], cpu: emptyCpu(), gatewayCpuByRun: [] });
  const phases: Phases = { closed: new Map(), rate: new Map(), stream: new Map() };
  for (const target of targets) for (const phase of Object.values(phases)) phase.set(target.key, empty());
  const rotated = (round: number) => targets.map((_, index) => targets[(index + round) % targets.length]!);
  // Room for the longest key (gw1-redis@before), as wide as before without it.
  const width = Math.max(15, ...targets.map((t) => t.key.length + 1));
  for (let round = 0; round < options.rounds; round++) {
    for (const phase of ['closed', 'rate', 'stream'] as const) {
      for (const target of rotated(round)) {
        const run = await measure(stack, target, phaseSpec(options, target, phase));
        const aggregate = phases[phase].get(target.key)!;
        aggregate.runs.push(run.result);
        aggregate.gatewayCpuByRun.push(run.cpu.gateway);
        for (const field of Object.keys(aggregate.cpu) as (keyof CpuSplit)[]) aggregate.cpu[field] += run.cpu[field];
        log(PHASE_LINE[phase](round, target.key.padEnd(width), run, options.rate));
      }
    }
    await afterRound?.(round);
  }
  return phases;
}
