/**
 * The background benchmark's figures of one phase, over its measured part: what the interactive
 * client saw, what the simulator answered each class of upstream call (the tap), the pool's
 * utilisation (the simulator's own token count against the budget), and the batch against its ideal.
 */
import type { DeploymentStats } from '../../shared/simulator/types.ts';
import type { Answer } from '../admission/client.ts';
import type { Cores, RequestRecord } from '../admission/phase.ts';
import { summarize, type Summary } from '../lib/stats.ts';
import type { OutputCheck } from './batch-client.ts';
import type { PhaseRaw, SimulatorPoint } from './phase.ts';
import { DEPLOYMENT_IDS, type Costs, type PhaseKind, type Settings } from './settings.ts';
import { callsBetween, type UpstreamCall } from './upstream-tap.ts';

export interface ClassFigures {
  calls: number;
  served: number;
  throttled: number;
  /** Other statuses and calls that broke off. */
  failed: number;
  tokens: number;
}

export interface BatchFigures {
  lines: number;
  status: string;
  completed: number;
  failed: number;
  /** From batches.create to the end seen by the client, s (undefined: not ended by the cap). */
  seconds: number | undefined;
  /** From the first line's upstream call to the last one's answer, s. */
  linesSpanSeconds: number | undefined;
  tokensPerLine: number;
  /** (1 − reserve) × capacity − the interactive tokens of the measured part, per second. */
  idleTokensPerSecond: number;
  /** lines × tokens per line ÷ idle tokens per second. */
  idealSeconds: number;
  output: OutputCheck | undefined;
  error: string | undefined;
}

export interface PhaseReport {
  kind: PhaseKind;
  round: number;
  pool: string;
  offeredRps: number;
  measuredMs: number;
  requests: number;
  succeeded: number;
  clientErrors: number;
  clientErrorsByKind: Record<string, number>;
  gateway429: number;
  latency200: Summary | null;
  /** Per interactive 200: client latency minus the time its upstream calls took at the simulator (through the tap). */
  addedLatency: Summary | null;
  /** 200 answers whose upstream calls were found by request id (the added latency's sample). */
  addedMatched: number;
  interactive: ClassFigures;
  interactive429Share: number;
  background: ClassFigures;
  probes: number;
  /** The simulator's own totals over the measured part. */
  simulator: DeploymentStats;
  /** The tap's calls and tokens minus the simulator's over the measured part (0, 0 when the tap saw all). */
  tapMinusSimulator: { calls: number; tokens: number };
  budgetTokens: number;
  /** Tokens served ÷ budget over the measured part (simulator), and the two classes' parts of it (tap). */
  utilisation: number;
  interactiveShare: number;
  backgroundShare: number;
  /** Tokens served in each whole window inside the measured part ÷ the window's budget (simulator samples). */
  windowUtilisation: Summary | null;
  batch: BatchFigures | undefined;
  cores: Cores;
  scheduleLag: Summary | null;
  unfinished: number;
}

const finalOf = (r: RequestRecord): Answer | undefined => (r.dropped ? undefined : (r.retry ?? r.first));

function errorKind(r: RequestRecord, final: Answer | undefined): string {
  if (r.dropped) return 'dropped (client at max in flight)';
  if (final === undefined) return 'no answer';
  if (final.status === 429) return r.retry ? '429 again after the honoured retry' : '429 not retried';
  if (final.status === 0) return `transport: ${final.error ?? 'error'}`;
  return `status ${final.status}`;
}

function classFigures(calls: UpstreamCall[]): ClassFigures {
  const figures: ClassFigures = { calls: calls.length, served: 0, throttled: 0, failed: 0, tokens: 0 };
  for (const call of calls) {
    if (call.status === 200) figures.served += 1;
    else if (call.status === 429) figures.throttled += 1;
    else figures.failed += 1;
    figures.tokens += call.promptTokens + call.completionTokens;
  }
  return figures;
}

/** Client latency minus the upstream time of each 200 (its calls found by the request id the gateway sent). */
function addedLatency(measured: RequestRecord[], calls: UpstreamCall[]): { summary: Summary | null; matched: number } {
  const upstreamMs = new Map<string, number>();
  for (const call of calls) {
    if (call.kind === 'interactive') upstreamMs.set(call.requestId, (upstreamMs.get(call.requestId) ?? 0) + call.endMs - call.startMs);
  }
  const added: number[] = [];
  for (const r of measured) {
    const final = finalOf(r);
    if (final?.status !== 200 || final.requestId === undefined) continue;
    const upstream = upstreamMs.get(final.requestId);
    if (upstream !== undefined) added.push(final.latencyMs - upstream);
  }
  return { summary: summarize(added), matched: added.length };
}

/** Each whole window within [fromMs, toMs]: tokens served in it ÷ its budget. */
function windowUtilisation(timeline: SimulatorPoint[], fromMs: number, toMs: number, windowMs: number, budget: number): Summary | null {
  const shares: number[] = [];
  for (const point of timeline) {
    if (point.atMs - windowMs < fromMs || point.atMs > toMs) continue;
    // The sample nearest to one window earlier.
    let earlier: SimulatorPoint | undefined;
    for (const candidate of timeline) {
      if (candidate.atMs > point.atMs - windowMs + 250) break;
      earlier = candidate;
    }
    if (earlier && point.atMs - earlier.atMs > windowMs / 2)
      shares.push(((point.tokens - earlier.tokens) * windowMs) / (point.atMs - earlier.atMs) / budget);
  }
  return summarize(shares);
}

function batchFigures(raw: PhaseRaw, settings: Settings, costs: Costs, interactiveTokensPerSecond: number): BatchFigures | undefined {
  const run = raw.batch;
  if (!run) return undefined;
  const lineCalls = raw.calls.filter((c) => c.kind === 'background');
  const served = lineCalls.filter((c) => c.status === 200);
  const tokens = served.reduce((acc, c) => acc + c.promptTokens + c.completionTokens, 0);
  const tokensPerLine = served.length ? tokens / served.length : costs.line.usage;
  const idleTokensPerSecond = (1 - settings.reserve) * costs.capacityTokensPerSecond - interactiveTokensPerSecond;
  const first = Math.min(...lineCalls.map((c) => c.startMs));
  const last = Math.max(...lineCalls.map((c) => c.endMs));
  return {
    lines: run.lines,
    status: run.status ?? (run.batchId ? 'not ended by the cap' : 'not created'),
    completed: run.requestCounts?.completed ?? 0,
    failed: run.requestCounts?.failed ?? 0,
    seconds: run.endedAtMs !== undefined && run.createdAtMs !== undefined ? (run.endedAtMs - run.createdAtMs) / 1000 : undefined,
    linesSpanSeconds: lineCalls.length ? (last - first) / 1000 : undefined,
    tokensPerLine,
    idleTokensPerSecond,
    idealSeconds: idleTokensPerSecond > 0 ? (run.lines * tokensPerLine) / idleTokensPerSecond : Number.NaN,
    output: run.output,
    error: run.error,
  };
}

export function analyse(raw: PhaseRaw, settings: Settings, costs: Costs): PhaseReport {
  const measured = raw.records.filter((r) => r.arrivalMs >= raw.measuredFromMs && r.arrivalMs < raw.measuredToMs);
  const answers = measured.flatMap((r) => [r.first, r.retry].filter((a): a is Answer => a !== undefined));
  const clientErrorsByKind: Record<string, number> = {};
  let succeeded = 0;
  for (const r of measured) {
    const final = finalOf(r);
    if (final?.status === 200) succeeded += 1;
    else clientErrorsByKind[errorKind(r, final)] = (clientErrorsByKind[errorKind(r, final)] ?? 0) + 1;
  }
  const measuredMs = raw.measuredToMs - raw.measuredFromMs;
  const window = callsBetween(raw.calls, raw.t0 + raw.measuredFromMs, raw.t0 + raw.measuredToMs);
  const interactive = classFigures(window.filter((c) => c.kind === 'interactive'));
  const background = classFigures(window.filter((c) => c.kind === 'background'));
  const probes = window.filter((c) => c.kind === 'probe').length;
  const simulatorTokens = raw.upstreamMeasured.promptTokens + raw.upstreamMeasured.completionTokens;
  const budgetTokens = (DEPLOYMENT_IDS.length * settings.tpm * measuredMs) / settings.windowMs;
  const added = addedLatency(measured, raw.calls);
  return {
    kind: raw.kind,
    round: raw.round,
    pool: raw.pool,
    offeredRps: raw.rate,
    measuredMs,
    requests: measured.length,
    succeeded,
    clientErrors: measured.length - succeeded,
    clientErrorsByKind,
    gateway429: answers.filter((a) => a.status === 429).length,
    latency200: summarize(answers.filter((a) => a.status === 200).map((a) => a.latencyMs)),
    addedLatency: added.summary,
    addedMatched: added.matched,
    interactive,
    interactive429Share: interactive.calls ? interactive.throttled / interactive.calls : 0,
    background,
    probes,
    simulator: raw.upstreamMeasured,
    tapMinusSimulator: {
      calls: window.length - raw.upstreamMeasured.received,
      tokens: interactive.tokens + background.tokens - simulatorTokens,
    },
    budgetTokens,
    utilisation: simulatorTokens / budgetTokens,
    interactiveShare: interactive.tokens / budgetTokens,
    backgroundShare: background.tokens / budgetTokens,
    windowUtilisation: windowUtilisation(
      raw.timeline,
      raw.measuredFromMs,
      raw.measuredToMs,
      settings.windowMs,
      DEPLOYMENT_IDS.length * settings.tpm,
    ),
    batch: batchFigures(raw, settings, costs, (interactive.tokens * 1000) / Math.max(1, measuredMs)),
    cores: raw.cores,
    scheduleLag: summarize(raw.lag.filter((_, index) => (raw.records[index]?.arrivalMs ?? 0) >= raw.measuredFromMs)),
    unfinished: raw.unfinished,
  };
}
