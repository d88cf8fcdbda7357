/** The admission benchmark's figures of one phase: what the client saw, what went upstream, against the capacity. */
import type { DeploymentStats } from '../../shared/simulator/types.ts';
import { summarize, type Summary } from '../lib/stats.ts';
import type { Answer } from './client.ts';
import type { Cores, PhaseRaw, RequestRecord } from './phase.ts';
import { DEPLOYMENT_IDS, type Policy, type Settings } from './settings.ts';

export interface PhaseReport {
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
  cores: Cores;
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

/** Final answers of the measured requests: how many got 200, and why the others did not. */
function outcomes(measured: RequestRecord[]): { succeeded: number; errorsByKind: Record<string, number> } {
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
  return { succeeded, errorsByKind };
}

const finalOf = (r: RequestRecord) => (r.dropped ? undefined : (r.retry ?? r.first));

/** The 429s the client got, and what became of the honoured retries. */
function retryFigures(measured: RequestRecord[], answers: Answer[]) {
  const retried = measured.filter((r) => r.retry);
  const throttled = answers.filter((a) => a.status === 429);
  return {
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
    ok200AfterFailover: answers.filter((a) => a.status === 200 && a.gatewayAttempts > 1).length,
  };
}

export function analyse(raw: PhaseRaw, settings: Settings, estimate: number): PhaseReport {
  const measured = raw.records.filter((r) => r.arrivalMs >= raw.warmupMs);
  const answers = measured.flatMap((r) => [r.first, r.retry].filter((a): a is Answer => a !== undefined));
  const { succeeded, errorsByKind } = outcomes(measured);
  const measuredMs = raw.measuredToMs - raw.measuredFromMs;
  const tokensServed = raw.upstreamMeasured.promptTokens + raw.upstreamMeasured.completionTokens;
  const capacityTokens = (DEPLOYMENT_IDS.length * settings.tpm * measuredMs) / settings.windowMs;
  const okAnswers = answers.filter((a) => a.status === 200);
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
    ...retryFigures(measured, answers),
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

/** Per-second client timeline (by arrival second): arrivals, final 200s, first-try 429s. */
export function timelineOf(
  records: RequestRecord[],
): { second: number; arrivals: number; ok: number; first429: number; retried: number }[] {
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
