/**
 * One phase of the background benchmark, in its own pool: interactive load at the set share of
 * capacity (the admission benchmark's traffic: each arrival sent once, a 429 that names a retry time
 * honoured once), alone for a fixed number of windows, or with a batch created once the warm-up
 * window is over and the phase running until the batch ends (or its cap). Meanwhile the simulator's
 * counts are sampled every 500 ms; the tap notes every upstream call.
 */
import type OpenAI from 'openai';
import type { Batch } from 'openai/resources/batches';
import type { DeploymentStats } from '../../shared/simulator/types.ts';
import { sleepUntil } from '../admission/client.ts';
import {
  coresBetween,
  cpuSnapshot,
  diffStats,
  PhaseTraffic,
  type Cores,
  type CpuSnapshot,
  type RequestRecord,
} from '../admission/phase.ts';
import { arrivalSchedule, dispatchArrivals } from '../lib/arrivals.ts';
import { fmt } from '../lib/format.ts';
import { sumStats } from '../lib/stack.ts';
import {
  batchClient,
  checkOutput,
  createBatch,
  inputFile,
  uploadInput,
  waitForBatch,
  type BatchProgress,
  type OutputCheck,
} from './batch-client.ts';
import { KIND_LABEL, poolName, requestPath, type Costs, type PhaseKind, type Settings } from './settings.ts';
import type { Stack } from './stack.ts';
import type { UpstreamCall } from './upstream-tap.ts';

/** Bound on the arrivals of one phase (the plan's are a few thousand). */
const MAX_ARRIVALS = 100_000;

export interface SimulatorPoint {
  /** ms since the phase start. */
  atMs: number;
  tokens: number;
  received: number;
  throttled: number;
}

export interface BatchRun {
  lines: number;
  fileId: string;
  uploadMs: number;
  batchId?: string;
  /** ms since the phase start: batches.create sent, and the batch's end seen (undefined: not by the cap). */
  createdAtMs?: number;
  endedAtMs?: number;
  status?: Batch['status'];
  requestCounts?: Batch['request_counts'];
  progress: { atMs: number; settled: number; status: string }[];
  readErrors: number;
  output?: OutputCheck;
  error?: string;
}

export interface PhaseRaw {
  kind: PhaseKind;
  round: number;
  pool: string;
  rate: number;
  /** performance.now() of the phase start: the tap's calls are on that clock. */
  t0: number;
  warmupMs: number;
  /** The measured part, ms since the phase start: after the warm-up alone; from batches.create to the batch's end with it. */
  measuredFromMs: number;
  measuredToMs: number;
  records: RequestRecord[];
  lag: number[];
  upstreamMeasured: DeploymentStats;
  cores: Cores;
  timeline: SimulatorPoint[];
  /** The tap's calls that started during the phase (its drain included). */
  calls: UpstreamCall[];
  unfinished: number;
  batch?: BatchRun;
}

interface Snapshot {
  atMs: number;
  stats: DeploymentStats;
  cpu: CpuSnapshot;
}

async function snapshot(stack: Stack, t0: number): Promise<Snapshot> {
  const cpu = cpuSnapshot(stack);
  const stats = sumStats(await stack.simulator.stats());
  return { atMs: cpu.at - t0, stats, cpu };
}

/** The simulator's totals every 500 ms (one read at a time: a slow answer skips ticks). */
function sampleSimulator(stack: Stack, t0: number): { timeline: SimulatorPoint[]; stop: () => void } {
  const timeline: SimulatorPoint[] = [];
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void stack.simulator
      .stats()
      .then((all) => {
        const total = sumStats(all);
        const atMs = Math.round(performance.now() - t0);
        timeline.push({ atMs, tokens: total.promptTokens + total.completionTokens, received: total.received, throttled: total.throttled });
      })
      .catch(() => {})
      .finally(() => (busy = false));
  }, 500);
  return { timeline, stop: () => clearInterval(timer) };
}

/** The batch's part of a phase: created at the warm-up's end, read until it ends; the measured part's snapshots. */
async function driveBatch(
  stack: Stack,
  openai: OpenAI,
  run: BatchRun,
  t0: number,
  warmupMs: number,
  capMs: number,
): Promise<{ start: Snapshot; end: Snapshot }> {
  await sleepUntil(t0 + warmupMs);
  const start = await snapshot(stack, t0);
  run.createdAtMs = performance.now() - t0;
  const onRead = (p: BatchProgress) => run.progress.push({ atMs: Math.round(p.atMs - t0), settled: p.settled, status: p.status });
  try {
    const created = await createBatch(openai, run.fileId);
    run.batchId = created.id;
    const waited = await waitForBatch(openai, created.id, t0 + run.createdAtMs + capMs, onRead);
    run.readErrors = waited.readErrors;
    if (waited.endedAtMs !== undefined) run.endedAtMs = waited.endedAtMs - t0;
    run.status = waited.batch?.status;
    run.requestCounts = waited.batch?.request_counts;
  } catch (error) {
    run.error = (error as Error).message;
  }
  return { start, end: await snapshot(stack, t0) };
}

export async function runPhase(
  stack: Stack,
  settings: Settings,
  costs: Costs,
  kind: PhaseKind,
  round: number,
  body: Buffer,
  log: (line: string) => void,
): Promise<PhaseRaw> {
  const pool = poolName(kind, round);
  const warmupMs = settings.warmupWindows * settings.windowMs;
  const measuredMs = kind === 'alone' ? settings.aloneWindows * settings.windowMs : settings.batchCapMs;
  const rate = costs.interactiveRps;
  const schedule = arrivalSchedule({
    spacing: 'even',
    stages: [{ durationMs: warmupMs + measuredMs, target: rate }],
    maxArrivals: MAX_ARRIVALS,
  });
  const plan = {
    policy: 'spillway' as const,
    load: settings.load,
    pool,
    path: requestPath(pool),
    rate,
    warmupMs,
    totalMs: schedule.endMs,
    schedule,
  };

  // The input file is uploaded before the phase: its upload is not background work.
  const openai = kind === 'batch' ? batchClient(stack.gateways[0]!.url) : undefined;
  let batch: BatchRun | undefined;
  if (openai) {
    const file = inputFile(settings, pool);
    const uploaded = await uploadInput(openai, file);
    batch = { lines: settings.lines, fileId: uploaded.fileId, uploadMs: uploaded.ms, progress: [], readErrors: 0 };
    log(`    uploaded ${settings.lines} lines (${fmt(file.length / 1024, 0)} KB) in ${fmt(uploaded.ms, 0)} ms: ${uploaded.fileId}`);
  }

  const t0 = performance.now();
  const sampler = sampleSimulator(stack, t0);
  const traffic = new PhaseTraffic(stack.client, plan, body, t0);
  let finished = false;
  // Alone: the measured part starts after the warm-up and ends with the schedule; with the batch: its own snapshots.
  const measured: Promise<{ start: Snapshot; end?: Snapshot }> =
    openai && batch
      ? driveBatch(stack, openai, batch, t0, warmupMs, settings.batchCapMs).finally(() => (finished = true))
      : sleepUntil(t0 + warmupMs).then(async () => ({ start: await snapshot(stack, t0) }));
  // Awaited after the arrivals, where a failure counts; until then it must not surface as unhandled.
  measured.catch(() => {});
  let lastBatchLine = 0;
  try {
    await dispatchArrivals(
      schedule,
      t0,
      (k, due, now) => {
        if (finished) return false;
        traffic.fire(k, due, now);
        return true;
      },
      (now) => {
        traffic.progress(now, log);
        const last = batch?.progress.at(-1);
        if (last && now - lastBatchLine >= 5000) {
          lastBatchLine = now;
          log(`    ${fmt(now / 1000, 0)}s: batch ${last.status}, ${last.settled} of ${settings.lines} lines settled`);
        }
      },
    );
  } finally {
    sampler.stop();
  }
  const { start, end: batchEnd } = await measured;
  const end = batchEnd ?? (await snapshot(stack, t0));
  const unfinished = await traffic.drain();
  const calls = stack.tap.calls.filter((c) => c.startMs >= t0);
  if (openai && batch?.status) {
    const found = await finalBatch(openai, batch);
    if (found) batch.output = await checkOutput(openai, found, settings.lines);
  }
  log(
    `    ${KIND_LABEL[kind]}: measured ${fmt((end.atMs - start.atMs) / 1000, 1)} s${batch ? `, batch ${batch.status ?? 'not created'}` : ''}`,
  );
  return {
    kind,
    round,
    pool,
    rate,
    t0,
    warmupMs,
    measuredFromMs: start.atMs,
    measuredToMs: end.atMs,
    records: traffic.records,
    lag: traffic.lag,
    upstreamMeasured: diffStats(start.stats, end.stats),
    cores: coresBetween(start.cpu, end.cpu),
    timeline: sampler.timeline,
    calls,
    unfinished,
    ...(batch ? { batch } : {}),
  };
}

/** The batch as it ended, for its file ids (bounded by the SDK's timeout). */
async function finalBatch(openai: OpenAI, run: BatchRun): Promise<Batch | undefined> {
  if (!run.batchId) return undefined;
  try {
    return await openai.batches.retrieve(run.batchId);
  } catch (error) {
    run.error = (error as Error).message;
    return undefined;
  }
}
