/** The bench's figures per target, from every round's runs, and the verdicts against the goals. */
import { cpus } from 'node:os';
import { fmt } from '../lib/format.ts';
import type { RunResult } from '../lib/protocol.ts';
import { median, summarize, type Summary } from '../lib/stats.ts';
import { LABELS, type BenchOptions, type TargetKey } from './options.ts';
import type { IdleCost, Phases } from './measure.ts';
import type { Target } from './targets.ts';

export interface Row {
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
  /** The same, each round's closed-loop run on its own (empty without a gateway process). */
  gatewayUsPerRequestClosedByRound: number[];
  gatewayCoresClosed: number | null;
  rssMb: number | null;
  rssIdleMb: number | null;
  foreignCores: number;
  generatorCoresClosed: number;
}

export interface Verdict {
  goal: string;
  measured: string;
  result: 'PASS' | 'FAIL' | 'n/a' | 'info';
}

function merge(values: number[][]): Summary | null {
  return summarize(values.flat());
}

const sumOf = (runs: RunResult[], pick: (r: RunResult) => number) => runs.reduce((acc, r) => acc + pick(r), 0);

/** `memory`: RSS and peak of each target's gateway processes after the rounds. */
export function rowOf(target: Target, phases: Phases, idle: IdleCost, memory: { rss: number; peak: number }[]): Row {
  const closed = phases.closed.get(target.key)!;
  const rated = phases.rate.get(target.key)!;
  const streamed = phases.stream.get(target.key)!;
  const closedCompleted = sumOf(closed.runs, (r) => r.completed);
  const ratedCompleted = sumOf(rated.runs, (r) => r.completed);
  const perRequest = (ms: number, count: number, applies: boolean) => (applies && count > 0 ? (ms * 1000) / count : null);
  const allWall = closed.cpu.wallMs + rated.cpu.wallMs + streamed.cpu.wallMs;
  const hasGateway = target.gatewayPids.length > 0;
  return {
    key: target.key,
    label: LABELS[target.key],
    closedRps: sumOf(closed.runs, (r) => r.completedInLoad) / (sumOf(closed.runs, (r) => r.loadMs) / 1000),
    closedRpsMedian: median(closed.runs.map((r) => r.rps)),
    closedRpsBest: Math.max(...closed.runs.map((r) => r.rps)),
    idleCores: idle.cores.get(target.key) ?? null,
    closed: merge(closed.runs.map((r) => r.samples?.latency200 ?? [])),
    closedErrors: sumOf(closed.runs, (r) => r.errors),
    rateAchieved: sumOf(rated.runs, (r) => r.completed) / (sumOf(rated.runs, (r) => r.loadMs) / 1000),
    rateLatency: merge(rated.runs.map((r) => r.samples?.latency200 ?? [])),
    rateErrors: sumOf(rated.runs, (r) => r.errors),
    ttft: merge(streamed.runs.map((r) => r.samples?.ttft ?? [])),
    streamErrors: sumOf(streamed.runs, (r) => r.errors),
    gatewayUsPerRequest: perRequest(rated.cpu.gateway, ratedCompleted, hasGateway),
    nginxUsPerRequest: perRequest(closed.cpu.nginx, closedCompleted, target.nginxPids.length > 0),
    redisUsPerRequest: perRequest(closed.cpu.redis, closedCompleted, target.usesRedis),
    gatewayUsPerRequestClosed: perRequest(closed.cpu.gateway, closedCompleted, hasGateway),
    gatewayUsPerRequestClosedByRound: hasGateway
      ? closed.runs.map((run, round) => ((closed.gatewayCpuByRun[round] ?? 0) * 1000) / Math.max(1, run.completed))
      : [],
    gatewayCoresClosed: hasGateway ? closed.cpu.gateway / closed.cpu.wallMs : null,
    rssMb: memory.length ? memory.reduce((acc, m) => acc + m.rss, 0) / memory.length : null,
    rssIdleMb: idle.rss.get(target.key) ?? null,
    foreignCores: (closed.cpu.foreign + rated.cpu.foreign + streamed.cpu.foreign) / allWall,
    generatorCoresClosed: closed.cpu.generator / closed.cpu.wallMs,
  };
}

/** The latency a row adds to direct's (at the fixed rate, or TTFT of the streams); null without direct. */
export function addedToDirect(rows: Row[]): (row: Row, pick: (s: Summary) => number, of: 'rateLatency' | 'ttft') => number | null {
  const direct = rows.find((row) => row.key === 'direct');
  return (row, pick, of) => {
    const base = direct?.[of];
    const mine = row[of];
    return base && mine ? pick(mine) - pick(base) : null;
  };
}

export function verdictsOf(rows: Row[], options: BenchOptions): Verdict[] {
  const byKey = new Map(rows.map((row) => [row.key, row]));
  return [
    ...latencyGoals(rows, byKey, options.rate),
    ...throughputGoals(byKey),
    ...cpuGoals(byKey),
    ...scalingGoal(byKey),
    ...beforeAndAfter(rows, byKey),
  ];
}

function latencyGoals(rows: Row[], byKey: Map<TargetKey, Row>, rate: number): Verdict[] {
  const added = addedToDirect(rows);
  const out: Verdict[] = [];
  for (const key of ['gw1-mem', 'gw1-redis', 'gw3-redis'] as TargetKey[]) {
    const row = byKey.get(key);
    if (!row || !byKey.get('direct')) continue;
    const p50 = added(row, (s) => s.p50, 'rateLatency');
    const p99 = added(row, (s) => s.p99, 'rateLatency');
    out.push({
      goal: `${row.label}: added median latency < 1 ms at ${rate} rps`,
      measured: `${fmt(p50, 2)} ms`,
      result: p50 === null ? 'n/a' : p50 < 1 ? 'PASS' : 'FAIL',
    });
    out.push({
      goal: `${row.label}: added p99 latency < 5 ms at ${rate} rps`,
      measured: `${fmt(p99, 2)} ms`,
      result: p99 === null ? 'n/a' : p99 < 5 ? 'PASS' : 'FAIL',
    });
  }
  return out;
}

function throughputGoals(byKey: Map<TargetKey, Row>): Verdict[] {
  const nginxRow = byKey.get('nginx');
  const out: Verdict[] = [];
  for (const key of ['gw1-mem', 'gw1-redis'] as TargetKey[]) {
    const row = byKey.get(key);
    if (!row || !nginxRow) continue;
    const ratio = row.closedRpsMedian / nginxRow.closedRpsMedian;
    out.push({
      goal: `${row.label}: requests/s ≥ ½ of nginx alone`,
      measured: `${fmt(row.closedRpsMedian, 0)} vs ${fmt(nginxRow.closedRpsMedian, 0)} rps (×${fmt(ratio, 2)})`,
      result: ratio >= 0.5 ? 'PASS' : 'FAIL',
    });
  }
  return out;
}

/**
 * CPU per request in the closed loop against the bare Node proxy's (issue 14's goal: ≤ 2× with the
 * Redis store), and where the stack floor puts the part no gateway logic of ours can take away.
 */
function cpuGoals(byKey: Map<TargetKey, Row>): Verdict[] {
  const bareRow = byKey.get('node-proxy');
  const bare = bareRow?.gatewayUsPerRequestClosed;
  if (!bareRow || !bare) return [];
  // The machine's speed drifts between rounds: each round's ratio (runs minutes apart at most) shows how far.
  const byRound = (row: Row) => {
    const ratios = row.gatewayUsPerRequestClosedByRound.map((us, round) => us / (bareRow.gatewayUsPerRequestClosedByRound[round] ?? NaN));
    const finite = ratios.filter(Number.isFinite);
    return finite.length > 1 ? `; by round ×${fmt(Math.min(...finite), 2)}–${fmt(Math.max(...finite), 2)}` : '';
  };
  const out: Verdict[] = [];
  const floorRow = byKey.get('stack-floor');
  const floor = floorRow?.gatewayUsPerRequestClosed;
  if (floorRow && floor) {
    out.push({
      goal: `${LABELS['stack-floor']}: CPU per request over the bare Node proxy's (closed loop)`,
      measured: `${fmt(floor, 0)} vs ${fmt(bare, 0)} µs (×${fmt(floor / bare, 2)}${byRound(floorRow)})`,
      result: 'info',
    });
  }
  for (const key of ['gw1-mem', 'gw1-redis'] as TargetKey[]) {
    const row = byKey.get(key);
    const mine = row?.gatewayUsPerRequestClosed;
    if (!row || !mine) continue;
    const overFloor = floor ? `; ×${fmt(mine / floor, 2)} the stack floor's` : '';
    out.push({
      goal: `${row.label}: CPU per request ≤ 2× the bare Node proxy's (closed loop)`,
      measured: `${fmt(mine, 0)} vs ${fmt(bare, 0)} µs (×${fmt(mine / bare, 2)}${byRound(row)})${overFloor}`,
      result: mine <= 2 * bare ? 'PASS' : 'FAIL',
    });
  }
  return out;
}

function scalingGoal(byKey: Map<TargetKey, Row>): Verdict[] {
  const gw1 = byKey.get('gw1-redis');
  const gw3 = byKey.get('gw3-redis');
  if (!gw1 || !gw3) return [];
  const cores = cpus().length;
  const ratio = gw3.closedRpsMedian / gw1.closedRpsMedian;
  return [
    {
      goal: `3 instances scale with the cores (${cores} here, shared with the load generator, simulator, nginx and Redis)`,
      measured: `×${fmt(ratio, 2)} the rps of one instance`,
      result: cores <= 2 ? 'info' : ratio >= Math.min(3, (cores - 1) / 2) ? 'PASS' : 'FAIL',
    },
  ];
}

/** --compare-with: each gateway against the same gateway of the other checkout, from the same rounds. */
function beforeAndAfter(rows: Row[], byKey: Map<TargetKey, Row>): Verdict[] {
  const added = addedToDirect(rows);
  const out: Verdict[] = [];
  for (const key of ['gw1-mem', 'gw1-redis'] as const) {
    const now = byKey.get(key);
    const before = byKey.get(`${key}@before`);
    if (!now || !before) continue;
    const p50 = (row: Row) =>
      fmt(
        added(row, (s) => s.p50, 'rateLatency'),
        2,
      );
    out.push({
      goal: `${now.label}: this checkout against the one of --compare-with`,
      measured:
        `${fmt(now.closedRpsMedian, 0)} vs ${fmt(before.closedRpsMedian, 0)} rps (×${fmt(now.closedRpsMedian / before.closedRpsMedian, 2)}); ` +
        `+p50 ${p50(now)} vs ${p50(before)} ms; CPU ${fmt(now.gatewayUsPerRequestClosed, 0)} vs ${fmt(before.gatewayUsPerRequestClosed, 0)} µs/req (closed)`,
      result: 'info',
    });
  }
  return out;
}
