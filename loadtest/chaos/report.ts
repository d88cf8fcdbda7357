/**
 * The chaos run's report: every arrival attributed to exactly one window (an event's: sent from its
 * start to the end of its settle time, as it happened, or in flight when it started; or the quiet
 * baseline, everything else: see windowOf), what the clients saw per window, what the simulator
 * received per deployment per window, the in-flight drift at the end, and the checks. Printed as
 * text tables, returned for the JSON, and written to docs/chaos.md between its markers.
 */
import { join } from 'node:path';
import { cpus } from 'node:os';
import type { DeploymentStats } from '../../shared/simulator/types.ts';
import { fmt, markdownTable, textTable } from '../lib/format.ts';
import { OUTCOME_CLASSES, type ArrivalRecord, type OutcomeClass } from '../lib/protocol.ts';
import { cpuModel, gitRevision, writeDocSection } from '../lib/report-doc.ts';
import { REPO_ROOT } from '../lib/stack.ts';
import { summarize } from '../lib/stats.ts';
import type { DriftReading } from './drift.ts';
import { describeAction, type ChaosAction, type ChaosRun, type StatsSnapshot } from './schedule.ts';

/** What the simulator counted for one deployment in one window. */
export interface UpstreamCounts {
  received: number;
  served: number;
  throttled: number;
  failed: number;
  aborted: number;
}

const UPSTREAM_FIELDS: (keyof UpstreamCounts)[] = ['received', 'served', 'throttled', 'failed', 'aborted'];

export interface WindowReport {
  name: string;
  kind: 'baseline' | ChaosAction['kind'];
  description: string;
  /** Seconds from the load's start, as it happened (events only): start, undo, end of the settle time. */
  fromS?: number;
  undoS?: number;
  toS?: number;
  /** The window's length; for the baseline, the quiet time in all (the load, drain included, minus the events' windows). */
  seconds: number;
  arrivals: number;
  outcomes: Record<OutcomeClass, number>;
  /** Arrivals that did not end `ok`. */
  failed: number;
  /** The failed arrivals by how they ended: HTTP status, or the transport error ('ECONNRESET', 'reset-mid-response', 'timeout'…), with the outcome class. */
  failures: Record<string, number>;
  /** The failed arrivals by the second of the load they were sent in (whole seconds from its start). */
  failedAt: Record<string, number>;
  /** Send to end of every sent arrival, whatever its outcome. */
  latency: { p50: number; p99: number } | null;
  /** Per simulated deployment; null when a simulator reading it needs failed. */
  upstream: Record<string, UpstreamCounts> | null;
  notes: string[];
  errors: string[];
}

export interface ChaosCheck {
  name: string;
  pass: boolean;
  actual: string;
}

export interface ChaosReport {
  settleMs: number;
  windows: WindowReport[];
  /** Arrivals the load generator reported (sent + dropped), and how many the windows hold: equal. */
  arrivals: { reported: number; attributed: number };
  drift: {
    leaseMs: number;
    atLoadEnd: DriftReading;
    afterLeases: DriftReading;
    /** The simulator's own in-flight count per deployment after the drain. */
    simulatorInFlight: Record<string, number>;
  };
  scheduleCompleted: boolean;
  /** Events not run (the schedule ran so late they would have ended after the load). */
  skipped: string[];
  checks: ChaosCheck[];
}

const emptyOutcomes = () => Object.fromEntries(OUTCOME_CLASSES.map((c) => [c, 0])) as Record<OutcomeClass, number>;

function diff(later: StatsSnapshot, earlier: StatsSnapshot): Record<string, UpstreamCounts> | null {
  if (!later.stats || !earlier.stats) return null;
  const out: Record<string, UpstreamCounts> = {};
  for (const [name, stats] of Object.entries(later.stats)) {
    const before: Partial<DeploymentStats> = earlier.stats[name] ?? {};
    out[name] = Object.fromEntries(
      UPSTREAM_FIELDS.map((field) => [field, stats[field] - (before[field] ?? 0)]),
    ) as unknown as UpstreamCounts;
  }
  return out;
}

function minus(
  total: Record<string, UpstreamCounts> | null,
  parts: (Record<string, UpstreamCounts> | null)[],
): Record<string, UpstreamCounts> | null {
  if (!total || parts.some((p) => p === null)) return null;
  const out: Record<string, UpstreamCounts> = {};
  for (const [name, counts] of Object.entries(total)) {
    out[name] = { ...counts };
    for (const part of parts) for (const field of UPSTREAM_FIELDS) out[name][field] -= part?.[name]?.[field] ?? 0;
  }
  return out;
}

/**
 * The window an arrival belongs to (0 = the baseline, i = run.events[i - 1]): the event whose
 * [start, end of settle) holds its send time; or, sent in quiet time, the first event that started
 * while it was still in flight (a request on a gateway that is killed is that kill's casualty, not
 * the baseline's); else the baseline. Exactly one, since the windows follow each other in time.
 */
export function windowOf(run: ChaosRun, arrival: ArrivalRecord): number {
  const { at } = arrival;
  const sentIn = run.events.findIndex((e) => at >= e.startedAt && at < e.windowEndAt);
  if (sentIn !== -1) return sentIn + 1;
  const endedAt = at + arrival.latencyMs;
  const caught = run.events.findIndex((e) => e.startedAt > at && e.startedAt < endedAt);
  return caught + 1;
}

/**
 * The windows with their arrivals (windowOf): the baseline first, then the events in order.
 * `endAt`: epoch ms when the load and its drain were over; `finalStats`: the simulator's counters then.
 */
export function attribute(run: ChaosRun, arrivals: ArrivalRecord[], endAt: number, finalStats: StatsSnapshot): WindowReport[] {
  const events: WindowReport[] = run.events.map((event) => ({
    name: event.name,
    kind: event.action.kind,
    description: describeAction(event.action),
    fromS: (event.startedAt - run.t0) / 1000,
    undoS: (event.endedAt - run.t0) / 1000,
    toS: (event.windowEndAt - run.t0) / 1000,
    seconds: (event.windowEndAt - event.startedAt) / 1000,
    arrivals: 0,
    outcomes: emptyOutcomes(),
    failed: 0,
    failures: {},
    failedAt: {},
    latency: null,
    upstream: diff(event.statsAtWindowEnd, event.statsAtStart),
    notes: event.notes,
    errors: event.errors,
  }));
  const quietSeconds = (endAt - run.t0) / 1000 - events.reduce((acc, e) => acc + e.seconds, 0);
  const baseline: WindowReport = {
    name: 'baseline',
    kind: 'baseline',
    description: `quiet time before, between and after the events (${fmt(quietSeconds, 0)} s, the drain included)`,
    seconds: quietSeconds,
    arrivals: 0,
    outcomes: emptyOutcomes(),
    failed: 0,
    failures: {},
    failedAt: {},
    latency: null,
    upstream: minus(
      diff(finalStats, run.statsAtStart),
      events.map((e) => e.upstream),
    ),
    notes: [],
    errors: [],
  };
  const windows = [baseline, ...events];
  const latencies = windows.map((): number[] => []);
  for (const arrival of arrivals) {
    const index = windowOf(run, arrival);
    const window = windows[index]!;
    window.arrivals += 1;
    window.outcomes[arrival.outcome] += 1;
    if (arrival.outcome !== 'ok') {
      window.failed += 1;
      const how = `${arrival.status || arrival.error || 'error'} ${arrival.outcome}`;
      window.failures[how] = (window.failures[how] ?? 0) + 1;
      const second = String(Math.floor((arrival.at - run.t0) / 1000));
      window.failedAt[second] = (window.failedAt[second] ?? 0) + 1;
    }
    if (arrival.outcome !== 'dropped') latencies[index]!.push(arrival.latencyMs);
  }
  windows.forEach((window, index) => {
    const summary = summarize(latencies[index]!);
    window.latency = summary ? { p50: summary.p50, p99: summary.p99 } : null;
  });
  return windows;
}

/** The checks of a chaos run: the schedule ran as planned, every action worked, no in-flight drift. */
export function chaosChecks(report: Omit<ChaosReport, 'checks'>): ChaosCheck[] {
  const failedActions = report.windows.filter((w) => w.errors.length > 0).map((w) => `${w.name}: ${w.errors.join('; ')}`);
  const after = report.drift.afterLeases;
  const leftovers: string[] = [];
  if (after.redis === null) leftovers.push(`Redis unreadable${after.redisError ? ` (${after.redisError})` : ''}`);
  for (const [label, counts] of Object.entries(after.redis ?? {})) if (counts.live > 0) leftovers.push(`${label}: ${counts.live} in Redis`);
  for (const [gateway, view] of Object.entries(after.gateways)) {
    if (view === null) leftovers.push(`${gateway}: admin API did not answer`);
    for (const [label, inFlight] of Object.entries(view ?? {}))
      if (inFlight > 0) leftovers.push(`${label}: ${inFlight} in ${gateway}'s view`);
  }
  return [
    {
      name: 'schedule ran to its end',
      pass: report.scheduleCompleted && report.skipped.length === 0,
      actual: !report.scheduleCompleted ? 'cut short' : report.skipped.length ? `skipped: ${report.skipped.join(', ')}` : 'yes',
    },
    {
      name: 'every arrival in exactly one window',
      pass: report.arrivals.reported === report.arrivals.attributed,
      actual: `${report.arrivals.attributed} of ${report.arrivals.reported}`,
    },
    { name: 'every chaos action worked', pass: failedActions.length === 0, actual: failedActions.join(' | ') || 'yes' },
    {
      name: `in-flight drift ${fmt(report.drift.leaseMs / 1000, 0)} s (leaseMs) after the load`,
      pass: leftovers.length === 0,
      actual: leftovers.join(', ') || '0 everywhere',
    },
  ];
}

// ---------------------------------------------------------------- tables

const seconds = (s: number | undefined) => fmt(s, 1);

function clientRows(windows: WindowReport[]): string[][] {
  return windows.map((w) => {
    const o = w.outcomes;
    return [
      w.name,
      w.kind === 'baseline' ? `quiet ${fmt(w.seconds, 0)} s` : `${seconds(w.fromS)}–${seconds(w.toS)}`,
      String(w.arrivals),
      String(o.ok),
      String(o.throttled),
      String(o['server-error']),
      String(o.transport),
      String(o.broken),
      String(o['client-error'] + o.unfinished + o.dropped),
      w.arrivals ? `${fmt((w.failed / w.arrivals) * 100, 1)} %` : '–',
      fmt(w.latency?.p50, 0),
      fmt(w.latency?.p99, 0),
    ];
  });
}

const CLIENT_HEADER = ['window', 'time s', 'arrivals', 'ok', '429', '5xx', 'transport', 'broken', 'other', 'failed', 'p50 ms', 'p99 ms'];

function deploymentsOf(windows: WindowReport[]): string[] {
  return [...new Set(windows.flatMap((w) => Object.keys(w.upstream ?? {})))].sort();
}

/** `pool--id` → `id` when every deployment is of one pool. */
function shortNames(names: string[]): Map<string, string> {
  const pools = new Set(names.map((n) => n.split('--')[0]));
  return new Map(names.map((n) => [n, pools.size === 1 ? (n.split('--')[1] ?? n) : n.replace('--', '/')]));
}

function upstreamRows(windows: WindowReport[], deployments: string[]): string[][] {
  return windows.map((w) => [
    w.name,
    ...deployments.map((d) => {
      const c = w.upstream?.[d];
      return c ? `${c.received} (${c.throttled}/${c.failed}/${c.aborted})` : '–';
    }),
  ]);
}

function driftRows(report: ChaosReport): { header: string[]; rows: string[][] } {
  const { atLoadEnd, afterLeases, simulatorInFlight } = report.drift;
  const gateways = Object.keys(afterLeases.gateways);
  const labels = [...new Set([...Object.keys(afterLeases.redis ?? {}), ...Object.keys(atLoadEnd.redis ?? {})])].sort();
  const redisCell = (reading: DriftReading, label: string) => {
    const c = reading.redis?.[label];
    return c ? `${c.live} / ${c.stored}` : '–';
  };
  const rows = labels.map((label) => [
    label,
    redisCell(atLoadEnd, label),
    redisCell(afterLeases, label),
    ...gateways.map((g) => {
      const view = afterLeases.gateways[g];
      return view ? String(view[label] ?? '–') : 'no answer';
    }),
    String(simulatorInFlight[label.replace('/', '--')] ?? '–'),
  ]);
  const after = fmt(report.drift.leaseMs / 1000, 0);
  return {
    header: [
      'deployment',
      'Redis at load end (live / stored)',
      `Redis ${after} s later`,
      ...gateways.map((g) => `${g} view`),
      'simulator in flight',
    ],
    rows,
  };
}

/** How each window's failures ended, and (for the baseline, whose quiet time is in pieces) when they were sent. */
function failureRows(report: ChaosReport): string[][] {
  return report.windows
    .filter((w) => w.failed > 0)
    .map((w) => [
      w.name,
      Object.entries(w.failures)
        .sort(([, a], [, b]) => b - a)
        .map(([how, n]) => `${how} ×${n}`)
        .join(', '),
      Object.entries(w.failedAt)
        .sort(([a], [b]) => Number(a) - Number(b))
        .map(([second, n]) => `${second}s×${n}`)
        .join(' '),
    ]);
}

const FAILURE_HEADER = ['window', 'failed arrivals by ending', 'sent in second (of the load)'];

function eventRows(report: ChaosReport): string[][] {
  return report.windows
    .filter((w) => w.kind !== 'baseline')
    .map((w) => [
      w.name,
      w.description,
      `${seconds(w.fromS)} → ${seconds(w.undoS)} (+ settle to ${seconds(w.toS)})`,
      [...w.notes, ...w.errors.map((e) => `FAILED ${e}`)].join('; ') || '–',
    ]);
}

const log = (line: string) => process.stdout.write(`${line}\n`);

export function printChaos(report: ChaosReport): void {
  log('');
  log('chaos: the schedule as it ran (seconds from the load start)');
  log(textTable(['event', 'action', 'start → end', 'notes'], eventRows(report)));
  log('');
  log(
    "chaos: what the clients saw, per window (an event's: requests sent from its start to the end of its settle time, and those in flight when it started)",
  );
  log(textTable(CLIENT_HEADER, clientRows(report.windows)));
  const failures = failureRows(report);
  if (failures.length) {
    log('');
    log(textTable(FAILURE_HEADER, failures));
  }
  const deployments = deploymentsOf(report.windows);
  const names = shortNames(deployments);
  log('');
  log('chaos: what the simulator received per deployment: received (429 / failed / aborted)');
  log(textTable(['window', ...deployments.map((d) => names.get(d) ?? d)], upstreamRows(report.windows, deployments)));
  const drift = driftRows(report);
  log('');
  log('chaos: in-flight drift (leases of each deployment)');
  log(textTable(drift.header, drift.rows));
  log('');
  log(
    textTable(
      ['chaos check', 'actual', 'result'],
      report.checks.map((c) => [c.name, c.actual, c.pass ? 'PASS' : 'FAIL']),
    ),
  );
}

// ---------------------------------------------------------------- docs/chaos.md

const DOC_START =
  '<!-- chaos:results:start (generated by loadtest/driver.ts for a scenario with a chaos schedule; edit outside these markers) -->';
const DOC_END = '<!-- chaos:results:end -->';

export interface DocContext {
  command: string;
  scenario: string;
  gateways: number;
  load: string;
  deployments: number;
  at: Date;
  resultFile: string;
}

export function chaosDocSection(report: ChaosReport, context: DocContext): string {
  const deployments = deploymentsOf(report.windows);
  const names = shortNames(deployments);
  const drift = driftRows(report);
  return [
    `Run of ${context.at.toISOString().slice(0, 16).replace('T', ' ')} UTC, commit ${gitRevision()}, on ${cpuModel()} (${cpus().length} cores):`,
    '',
    '```sh',
    context.command,
    '```',
    '',
    `Scenario \`${context.scenario}\`: ${context.load}; ${context.gateways} gateways behind nginx, ${context.deployments} simulated deployments, settle time ${fmt(report.settleMs / 1000, 1)} s. JSON: \`${context.resultFile}\`.`,
    '',
    '**The schedule as it ran** (seconds from the load start):',
    '',
    markdownTable(['event', 'action', 'start → end', 'notes'], eventRows(report)),
    '',
    '**What the clients saw**, per window (an event\'s: the requests sent from its start to the end of its settle time, and those still in flight when it started; "other" is any other 4xx, unfinished and dropped; latency of every sent request, whatever its end):',
    '',
    markdownTable(CLIENT_HEADER, clientRows(report.windows)),
    '',
    ...(failureRows(report).length
      ? ['How the failed arrivals ended, and when they were sent:', '', markdownTable(FAILURE_HEADER, failureRows(report)), '']
      : []),
    '**What the simulator received** per deployment: received (429 / failed / aborted):',
    '',
    markdownTable(['window', ...deployments.map((d) => names.get(d) ?? d)], upstreamRows(report.windows, deployments)),
    '',
    "**In-flight drift**, leases per deployment (live / stored in Redis; the gateways' admin view):",
    '',
    markdownTable(drift.header, drift.rows),
    '',
    markdownTable(
      ['check', 'actual', 'result'],
      report.checks.map((c) => [c.name, c.actual, c.pass ? 'PASS' : 'FAIL']),
    ),
  ].join('\n');
}

export function writeChaosDoc(report: ChaosReport, context: DocContext): string {
  const file = join(REPO_ROOT, 'docs', 'chaos.md');
  writeDocSection(file, DOC_START, DOC_END, chaosDocSection(report, context), '# Chaos run\n\n## Results\n\n');
  return file;
}
