/**
 * One phase of the admission benchmark: the offered load against one policy's pool (warm-up windows,
 * then the measured ones), a 429 that names a retry time honoured once; meanwhile the simulator's
 * counts, the gateways' own view (/admin/pools), CPU and the clocks are sampled.
 */
import { cpuMs, cpuMsOf, machineBusyMs } from '../../shared/processes/proc-stats.ts';
import type { DeploymentStats } from '../../shared/simulator/types.ts';
import { arrivalSchedule, dispatchArrivals, type ArrivalSchedule } from '../lib/arrivals.ts';
import { fmt } from '../lib/format.ts';
import { sumStats } from '../lib/stack.ts';
import { sleepUntil, within, type Answer, type Client } from './client.ts';
import { DRAIN_MS, MAX_ARRIVALS_PER_PHASE, MAX_IN_FLIGHT, poolName, requestPath, type Policy, type Settings } from './settings.ts';
import { adminPools, type Stack } from './stack.ts';

export interface RequestRecord {
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

export interface PhaseRaw {
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
  cores: Cores;
  /** How far CLOCK_REALTIME (Date.now, Redis TIME: the gateways' windows) moved against CLOCK_MONOTONIC
   *  (performance.now: the simulator's windows) over the measured part, ms; positive = realtime ran fast. */
  clockDriftMs: number;
  /** Largest minus smallest of realtime − monotonic, sampled every 500 ms over the measured part, ms. */
  clockRangeMs: number;
  unfinished: number;
  admin: unknown;
}

// ---------------------------------------------------------------- CPU and clocks

export interface CpuSnapshot {
  gateways: number;
  simulator: number;
  redis: number;
  self: number;
  machine: number;
  at: number;
}

export function cpuSnapshot(stack: Stack): CpuSnapshot {
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
export function coresBetween(a: CpuSnapshot, b: CpuSnapshot) {
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

export type Cores = ReturnType<typeof coresBetween>;

export function diffStats(a: DeploymentStats, b: DeploymentStats): DeploymentStats {
  const out = { ...b };
  for (const key of Object.keys(out) as (keyof DeploymentStats)[])
    if (key !== 'inFlight' && key !== 'peakConcurrency') out[key] = b[key] - a[key];
  return out;
}

// ---------------------------------------------------------------- the phase's plan and watch

export interface PhasePlan {
  policy: Policy;
  load: number;
  pool: string;
  path: string;
  rate: number;
  warmupMs: number;
  totalMs: number;
  schedule: ArrivalSchedule;
}

function phasePlan(settings: Settings, policy: Policy, load: number, capacityRps: number): PhasePlan {
  const pool = poolName(policy, load);
  const rate = capacityRps * load;
  const warmupMs = settings.warmupWindows * settings.windowMs;
  const measuredMs = settings.windows * settings.windowMs;
  const warmupRate = capacityRps * (settings.warmupLoad ?? Math.min(load, 1));
  // The warm-up windows at warmupRate, then the measured ones at the phase's rate.
  const stages = [
    { durationMs: warmupMs, target: warmupRate },
    { durationMs: measuredMs, target: rate },
  ];
  const schedule = arrivalSchedule(
    settings.arrivals === 'constant'
      ? { spacing: 'even', stages, maxArrivals: MAX_ARRIVALS_PER_PHASE }
      : { spacing: 'poisson', stages, seed: settings.seed, maxArrivals: MAX_ARRIVALS_PER_PHASE },
  );
  return { policy, load, pool, path: requestPath(pool), rate, warmupMs, totalMs: warmupMs + measuredMs, schedule };
}

interface Snapshot {
  atMs: number;
  stats: Record<string, DeploymentStats>;
  cpu: CpuSnapshot;
  realMinusMono: number;
}

/** What is sampled while a phase runs: the snapshot at the measured part's start, and every 500 ms the rest. */
class PhaseWatch {
  /** Realtime minus monotonic, sampled: a step in it moves the gateways' bucket grid against the simulator's. */
  readonly clockSamples: number[] = [];
  /** The gateways' own view of the budget used (tokens in the deployments' windows, from /admin/pools),
   *  compared after the phase with what the simulator really counts (see budgetViewOf). */
  readonly gatewayView: { atMs: number; tokens: number }[] = [];
  readonly upstreamTimeline: UpstreamPoint[] = [];
  private startSnapshot: Promise<Snapshot> | undefined;
  private readonly startTimer: NodeJS.Timeout;
  private readonly poller: NodeJS.Timeout;
  private readonly stack: Stack;
  private readonly t0: number;

  constructor(stack: Stack, plan: PhasePlan, t0: number) {
    this.stack = stack;
    this.t0 = t0;
    this.startTimer = setTimeout(() => {
      this.startSnapshot = this.snapshot();
      // Awaited after the phase, where a failure counts; until then it must not surface as unhandled.
      this.startSnapshot.catch(() => {});
    }, plan.warmupMs);
    // One poll of each kind at a time: a slow answer skips ticks instead of piling up requests.
    let adminBusy = false;
    let statsBusy = false;
    this.poller = setInterval(() => {
      const at = performance.now() - t0;
      if (at >= plan.warmupMs) this.clockSamples.push(Date.now() - performance.timeOrigin - performance.now());
      if (!adminBusy) {
        adminBusy = true;
        void this.pollAdmin(plan.pool, at).finally(() => (adminBusy = false));
      }
      if (!statsBusy) {
        statsBusy = true;
        void this.pollStats().finally(() => (statsBusy = false));
      }
    }, 500);
  }

  async snapshot(): Promise<Snapshot> {
    const cpu = cpuSnapshot(this.stack);
    const realMinusMono = Date.now() - performance.timeOrigin - performance.now();
    const stats = await this.stack.simulator.stats();
    return { atMs: cpu.at - this.t0, stats, cpu, realMinusMono };
  }

  /** The snapshot at the measured part's start (now, when the phase had no warm-up). */
  start(): Promise<Snapshot> {
    return this.startSnapshot ?? this.snapshot();
  }

  /** Also when a snapshot fails: no timer of this phase outlives it. */
  stop(): void {
    clearTimeout(this.startTimer);
    clearInterval(this.poller);
  }

  private async pollAdmin(pool: string, at: number): Promise<void> {
    const admin = await adminPools(this.stack.gateways[0]!);
    const deployments = (admin as { pools?: Record<string, { deployments?: { tokensInWindow?: number }[] }> }).pools?.[pool]?.deployments;
    if (deployments) this.gatewayView.push({ atMs: at, tokens: deployments.reduce((acc, d) => acc + (d.tokensInWindow ?? 0), 0) });
  }

  private async pollStats(): Promise<void> {
    try {
      const total = sumStats(await this.stack.simulator.stats());
      this.upstreamTimeline.push({
        atMs: Math.round(performance.now() - this.t0),
        received: total.received,
        served: total.served,
        throttled: total.throttled,
      });
    } catch {
      // a missed sample
    }
  }
}

// ---------------------------------------------------------------- the phase's traffic

/** The phase's requests: each arrival sent, a 429 that names a retry time honoured once within the phase. */
export class PhaseTraffic {
  readonly records: RequestRecord[] = [];
  readonly lag: number[] = [];
  readonly pending = new Set<Promise<void>>();
  private lastPrinted = 0;
  private readonly client: Client;
  private readonly plan: PhasePlan;
  private readonly body: Buffer;
  private readonly t0: number;

  constructor(client: Client, plan: PhasePlan, body: Buffer, t0: number) {
    this.client = client;
    this.plan = plan;
    this.body = body;
    this.t0 = t0;
  }

  fire(index: number, due: number, now: number): void {
    const record: RequestRecord = { arrivalMs: due };
    this.records.push(record);
    this.lag.push(now - due);
    if (this.client.inFlight >= MAX_IN_FLIGHT) {
      record.dropped = true;
      record.doneAt = now;
      return;
    }
    const gateway = index % this.client.count;
    const work = (async () => {
      record.first = await this.client.post(gateway, this.plan.path, this.body, this.t0);
      if (record.first.status === 429) await this.honour(record, record.first.retryAfterMs, gateway);
      record.doneAt = performance.now() - this.t0;
    })();
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
  }

  /** Re-sends after exactly the told time, through the next gateway, if that is still within the phase. */
  private async honour(record: RequestRecord, retryAfterMs: number | undefined, gateway: number): Promise<void> {
    const at = performance.now() - this.t0;
    if (retryAfterMs === undefined) record.notRetried = 'no-retry-after';
    else if (at + retryAfterMs >= this.plan.totalMs) record.notRetried = 'beyond-phase';
    else {
      const before = performance.now();
      await sleepUntil(before + retryAfterMs);
      record.waitedMs = performance.now() - before;
      record.retry = await this.client.post(gateway + 1, this.plan.path, this.body, this.t0);
    }
  }

  progress(now: number, log: (line: string) => void): void {
    if (now - this.lastPrinted < 5000) return;
    this.lastPrinted = now;
    const answered = this.records.filter((r) => r.doneAt !== undefined);
    const ok = answered.filter((r) => (r.retry ?? r.first)?.status === 200).length;
    log(
      `    ${fmt(now / 1000, 0)}s: arrivals ${this.records.length}, finished ${answered.length} (200: ${ok}), in flight ${this.client.inFlight}`,
    );
  }

  /** What is still in flight (retries were only scheduled inside the phase) gets DRAIN_MS; the rest is cut. */
  async drain(): Promise<number> {
    if (this.pending.size > 0) await within(Promise.all([...this.pending]), DRAIN_MS, undefined);
    const unfinished = this.client.cutAll();
    await Promise.all([...this.pending]);
    return unfinished;
  }
}

// ---------------------------------------------------------------- the phase

export async function runPhase(
  stack: Stack,
  settings: Settings,
  policy: Policy,
  load: number,
  capacityRps: number,
  body: Buffer,
  log: (line: string) => void,
): Promise<PhaseRaw> {
  const plan = phasePlan(settings, policy, load, capacityRps);
  const statsBefore = sumStats(await stack.simulator.stats());
  const t0 = performance.now();
  const watch = new PhaseWatch(stack, plan, t0);
  const traffic = new PhaseTraffic(stack.client, plan, body, t0);
  let end: Snapshot;
  try {
    await dispatchArrivals(
      plan.schedule,
      t0,
      (k, due, now) => {
        traffic.fire(k, due, now);
        return true;
      },
      (now) => traffic.progress(now, log),
    );
    end = await watch.snapshot();
  } finally {
    watch.stop();
  }
  const start = await watch.start();
  const unfinished = await traffic.drain();
  const admin = await adminPools(stack.gateways[0]!);
  const whole = sumStats(await stack.simulator.stats());
  return phaseRaw(plan, traffic, watch, { start, end, statsBefore, whole, unfinished, admin });
}

function phaseRaw(
  plan: PhasePlan,
  traffic: PhaseTraffic,
  watch: PhaseWatch,
  after: { start: Snapshot; end: Snapshot; statsBefore: DeploymentStats; whole: DeploymentStats; unfinished: number; admin: unknown },
): PhaseRaw {
  const { start, end } = after;
  const byDeployment: Record<string, DeploymentStats> = {};
  for (const [name, stats] of Object.entries(end.stats)) {
    const before = start.stats[name];
    if (before) byDeployment[name] = diffStats(before, stats);
  }
  const clocks = [...watch.clockSamples, start.realMinusMono, end.realMinusMono];
  return {
    policy: plan.policy,
    load: plan.load,
    pool: plan.pool,
    rate: plan.rate,
    totalMs: plan.totalMs,
    warmupMs: plan.warmupMs,
    records: traffic.records,
    lag: traffic.lag,
    measuredFromMs: start.atMs,
    measuredToMs: end.atMs,
    upstreamMeasured: diffStats(sumStats(start.stats), sumStats(end.stats)),
    upstreamMeasuredByDeployment: byDeployment,
    upstreamWholePhase: diffStats(after.statsBefore, after.whole),
    upstreamTimeline: watch.upstreamTimeline,
    gatewayView: watch.gatewayView,
    cores: coresBetween(start.cpu, end.cpu),
    clockDriftMs: end.realMinusMono - start.realMinusMono,
    clockRangeMs: watch.clockSamples.length ? Math.max(...clocks) - Math.min(...clocks) : 0,
    unfinished: after.unfinished,
    admin: (after.admin as { pools?: Record<string, unknown> }).pools?.[plan.pool] ?? after.admin,
  };
}
