/**
 * The background benchmark's report: the checks against issue 12's "Measure", the tables on stdout,
 * the JSON in loadtest/results/ and (unless --no-doc) the results section of docs/background.md.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { fmt, markdownTable, pct, textTable } from '../lib/format.ts';
import { cpuModel, gitRevision, writeDocSection } from '../lib/report-doc.ts';
import { REPO_ROOT, type GatewayHandle } from '../lib/stack.ts';
import type { PhaseReport } from './analysis.ts';
import type { PhaseRaw } from './phase.ts';
import { KIND_LABEL, type Costs, type RunOptions } from './settings.ts';

const log = (line: string) => process.stdout.write(`${line}\n`);

/** Added p50 (client − simulator) with the batch may exceed the same round's alone figure by this much, or this share of it. */
const ADDED_P50_SLACK_MS = 3;
const ADDED_P50_SLACK_SHARE = 0.25;
/** Interactive upstream 429s with the batch: at most this share of interactive calls above the alone figure. */
const UPSTREAM_429_SLACK = 0.002;

export interface Check {
  target: string;
  round: number;
  measured: string;
  pass: boolean;
}

export interface BackgroundRun {
  options: RunOptions;
  costs: Costs;
  startedAt: Date;
  loadBefore: number[];
  loadAfter: number[];
  runSeconds: number;
  /** Why the phases with the batch did not run, when they did not. */
  batchSkipped: string | undefined;
  raws: PhaseRaw[];
  reports: PhaseReport[];
  checks: Check[];
}

const phaseLabel = (r: PhaseReport) => `${r.round} ${KIND_LABEL[r.kind]}`;
const averages = (load: number[]) => load.map((v) => v.toFixed(2)).join(' ');

/** Per round, the phase with the batch against the one alone. */
export function checksOf(reports: PhaseReport[], reserve: number, load: number): Check[] {
  const checks: Check[] = [];
  for (const withBatch of reports.filter((r) => r.kind === 'batch')) {
    const round = withBatch.round;
    const alone = reports.find((r) => r.kind === 'alone' && r.round === round);
    const batch = withBatch.batch;
    const output = batch?.output;
    checks.push({
      target: 'the batch completed, every line exactly once with a 200',
      round,
      measured: `${batch?.status ?? '–'}; ${batch?.completed ?? 0} completed, ${batch?.failed ?? 0} failed; output: ${output ? `${output.outputLines} + ${output.errorLines} error lines, ${output.missing} missing, ${output.duplicates} duplicates` : '–'}`,
      pass:
        batch?.status === 'completed' &&
        output !== undefined &&
        output.missing === 0 &&
        output.duplicates === 0 &&
        output.errorLines === 0 &&
        batch.completed === batch.lines,
    });
    if (!alone) continue;
    checks.push({
      target: 'interactive client errors not above alone',
      round,
      measured: `${withBatch.clientErrors} with the batch, ${alone.clientErrors} alone`,
      pass: withBatch.clientErrors <= alone.clientErrors,
    });
    checks.push({
      target: `interactive upstream 429s not above alone (+${pct(UPSTREAM_429_SLACK, 1)} of calls)`,
      round,
      measured: `${withBatch.interactive.throttled} of ${withBatch.interactive.calls} (${pct(withBatch.interactive429Share, 2)}) with the batch, ${alone.interactive.throttled} of ${alone.interactive.calls} alone`,
      pass: withBatch.interactive429Share <= alone.interactive429Share + UPSTREAM_429_SLACK,
    });
    const withP50 = withBatch.addedLatency?.p50 ?? Number.NaN;
    const aloneP50 = alone.addedLatency?.p50 ?? Number.NaN;
    checks.push({
      target: `added p50 (gateway − simulator) not above alone + max(${ADDED_P50_SLACK_MS} ms, ${pct(ADDED_P50_SLACK_SHARE, 0)})`,
      round,
      measured: `${fmt(withP50, 1)} ms with the batch, ${fmt(aloneP50, 1)} ms alone`,
      pass: withP50 <= aloneP50 + Math.max(ADDED_P50_SLACK_MS, ADDED_P50_SLACK_SHARE * aloneP50),
    });
    const withWindow = withBatch.windowUtilisation?.p50 ?? Number.NaN;
    const aloneWindow = alone.windowUtilisation?.p50 ?? Number.NaN;
    checks.push({
      target: `utilisation per window (p50) rises toward 1 − reserve (${pct(1 - reserve, 0)}): at least half of the room above alone filled`,
      round,
      measured: `${pct(withWindow, 1)} with the batch, ${pct(aloneWindow, 1)} alone (interactive load ${pct(load, 0)})`,
      pass: withWindow >= aloneWindow + (1 - reserve - aloneWindow) / 2,
    });
  }
  return checks;
}

function mainTable(reports: PhaseReport[]): { header: string[]; rows: string[][] } {
  const header = [
    'round',
    'phase',
    'measured s',
    'interactive requests',
    'client errors',
    'interactive upstream calls',
    'interactive upstream 429s',
    'p50 ms',
    'p95 ms',
    'added p50 ms (gateway − simulator)',
    'utilisation per window p50 / max',
    'served ÷ budget over the part',
    'interactive / background share',
    'batch lines upstream (429s)',
    'foreign cores',
  ];
  const rows = reports.map((r) => [
    String(r.round),
    KIND_LABEL[r.kind],
    fmt(r.measuredMs / 1000, 1),
    String(r.requests),
    String(r.clientErrors),
    String(r.interactive.calls),
    `${r.interactive.throttled} (${pct(r.interactive429Share, 2)})`,
    fmt(r.latency200?.p50, 1),
    fmt(r.latency200?.p95, 1),
    fmt(r.addedLatency?.p50, 1),
    r.windowUtilisation ? `${pct(r.windowUtilisation.p50, 1)} / ${pct(r.windowUtilisation.max, 1)}` : '–',
    pct(r.utilisation, 1),
    `${pct(r.interactiveShare, 1)} / ${pct(r.backgroundShare, 1)}`,
    r.kind === 'batch' ? `${r.background.calls} (${r.background.throttled})` : '–',
    fmt(r.cores.foreign, 2),
  ]);
  return { header, rows };
}

function batchTable(reports: PhaseReport[]): { header: string[]; rows: string[][] } {
  const header = [
    'round',
    'lines',
    'status',
    'completed / failed',
    'time s (create → end seen)',
    'first → last line upstream s',
    'tokens per line',
    'idle tokens/s',
    'ideal s',
    'time ÷ ideal',
    'output check',
  ];
  const rows = reports
    .filter((r) => r.batch)
    .map((r) => {
      const b = r.batch!;
      const output = b.output;
      return [
        String(r.round),
        String(b.lines),
        b.status,
        `${b.completed} / ${b.failed}`,
        fmt(b.seconds, 1),
        fmt(b.linesSpanSeconds, 1),
        fmt(b.tokensPerLine, 0),
        fmt(b.idleTokensPerSecond, 0),
        fmt(b.idealSeconds, 1),
        b.seconds !== undefined ? `${fmt(b.seconds / b.idealSeconds, 2)}x` : '–',
        output
          ? output.error
            ? `unreadable: ${output.error}`
            : `${output.outputLines} + ${output.errorLines} error lines, ${output.missing} missing, ${output.duplicates} duplicates`
          : '–',
      ];
    });
  return { header, rows };
}

/** min–max over the rounds, for each kind: the figures side by side. */
function rangeTable(reports: PhaseReport[]): { header: string[]; rows: string[][] } {
  const range = (values: number[], show: (v: number) => string) => {
    const finite = values.filter((v) => Number.isFinite(v));
    if (!finite.length) return '–';
    const min = Math.min(...finite);
    const max = Math.max(...finite);
    return min === max ? show(min) : `${show(min)} – ${show(max)}`;
  };
  const metrics: [string, (r: PhaseReport) => number, (v: number) => string][] = [
    ['interactive client errors', (r) => r.clientErrors, (v) => String(v)],
    ['interactive upstream 429s (share of calls)', (r) => r.interactive429Share, (v) => pct(v, 2)],
    ['p50 ms', (r) => r.latency200?.p50 ?? Number.NaN, (v) => fmt(v, 1)],
    ['p95 ms', (r) => r.latency200?.p95 ?? Number.NaN, (v) => fmt(v, 1)],
    ['added p50 ms (gateway − simulator)', (r) => r.addedLatency?.p50 ?? Number.NaN, (v) => fmt(v, 1)],
    [
      'utilisation per window, p50 (tokens served in a window ÷ its budget)',
      (r) => r.windowUtilisation?.p50 ?? Number.NaN,
      (v) => pct(v, 1),
    ],
    ['tokens served ÷ budget over the measured part', (r) => r.utilisation, (v) => pct(v, 1)],
  ];
  const kinds = ['alone', 'batch'] as const;
  const rows = metrics.map(([name, value, show]) => [
    name,
    ...kinds.map((kind) => range(reports.filter((r) => r.kind === kind).map(value), show)),
  ]);
  const deltas = reports
    .filter((r) => r.kind === 'batch')
    .flatMap((b) => {
      const alone = reports.find((r) => r.kind === 'alone' && r.round === b.round);
      return alone ? [(b.latency200?.p50 ?? Number.NaN) - (alone.latency200?.p50 ?? Number.NaN)] : [];
    });
  rows.push(['p50 with the batch − alone, same round, ms', '', range(deltas, (v) => `${v >= 0 ? '+' : ''}${fmt(v, 1)}`)]);
  return { header: ['figure', 'alone', 'with batch'], rows };
}

const CHECK_HEADER = ['target', 'round', 'measured', 'result'];
const checkRows = (checks: Check[]) => checks.map((c) => [c.target, String(c.round), c.measured, c.pass ? 'PASS' : 'FAIL']);

export function phaseLine(r: PhaseReport): string {
  return (
    `    measured ${fmt(r.measuredMs / 1000, 1)} s: ${r.requests} interactive requests, client errors ${r.clientErrors}, ` +
    `upstream ${r.interactive.calls} interactive calls / ${r.interactive.throttled} 429s, ${r.background.calls} batch calls / ${r.background.throttled} 429s; ` +
    `p50 ${fmt(r.latency200?.p50, 1)} ms (added ${fmt(r.addedLatency?.p50, 1)} ms); utilisation per window p50 ${pct(r.windowUtilisation?.p50, 1)} (over the part ${pct(r.utilisation, 1)}); ` +
    `foreign load ${fmt(r.cores.foreign, 2)} cores, client lag p99 ${fmt(r.scheduleLag?.p99, 1)} ms` +
    (r.batch ? `; batch ${r.batch.status} in ${fmt(r.batch.seconds, 1)} s (ideal ${fmt(r.batch.idealSeconds, 1)} s)` : '')
  );
}

export function printReport(run: BackgroundRun): void {
  const tables = [mainTable(run.reports), rangeTable(run.reports), batchTable(run.reports)];
  for (const table of tables) {
    if (!table.rows.length) continue;
    log('');
    log(textTable(table.header, table.rows));
  }
  if (run.checks.length) {
    log('');
    log(textTable(CHECK_HEADER, checkRows(run.checks)));
  }
  if (run.batchSkipped) log(`\nthe phases with the batch did not run: ${run.batchSkipped}`);
  log(`\nrun time ${fmt(run.runSeconds, 0)} s; load average before ${averages(run.loadBefore)}, after ${averages(run.loadAfter)}`);
}

function resultsDir(options: RunOptions): string {
  const dir = options.resultsDir ? resolve(options.resultsDir) : join(REPO_ROOT, 'loadtest', 'results');
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Writes loadtest/results/background-<date>.json (and --json FILE, and with --keep-logs the gateways' logs). */
export function writeResult(run: BackgroundRun, gateways: GatewayHandle[]): { file: string; revision: string } {
  const { options, startedAt } = run;
  const output = {
    at: startedAt.toISOString(),
    command: options.command,
    revision: gitRevision(),
    machine: {
      cores: cpus().length,
      cpu: cpuModel(),
      node: process.version,
      loadAverageBefore: run.loadBefore,
      loadAverageAfter: run.loadAfter,
    },
    settings: options.settings,
    costs: run.costs,
    runSeconds: run.runSeconds,
    batchSkipped: run.batchSkipped ?? null,
    reports: run.reports,
    checks: run.checks,
    phases: run.raws.map((raw) => ({
      kind: raw.kind,
      round: raw.round,
      pool: raw.pool,
      measuredFromMs: raw.measuredFromMs,
      measuredToMs: raw.measuredToMs,
      simulatorTimeline: raw.timeline,
      batch: raw.batch ?? null,
    })),
  };
  const file = join(resultsDir(options), `background-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(output, null, 2));
  if (options.json) writeFileSync(resolve(options.json), JSON.stringify(output, null, 2));
  log(`result: ${file}${options.json ? ` and ${resolve(options.json)}` : ''}`);
  if (options.keepLogs) {
    for (const gateway of gateways) copyFileSync(gateway.log, file.replace(/\.json$/, `-${gateway.name}.log`));
    log(`gateway logs: ${file.replace(/\.json$/, '-gateway-N.log')}`);
  }
  return { file, revision: output.revision };
}

export const DOC_START = '<!-- background-bench:start (generated by loadtest/background-bench.ts; edit outside these markers) -->';
export const DOC_END = '<!-- background-bench:end -->';

function runLines(run: BackgroundRun, revision: string): string[] {
  const { settings, command } = run.options;
  const { costs } = run;
  return [
    `Command: \`${command}\`  `,
    `Date: ${run.startedAt.toISOString()}; run time ${fmt(run.runSeconds, 0)} s  `,
    `Revision: ${revision}  `,
    `Machine: ${cpus().length} cores (${cpuModel()}), shared; node ${process.version}; load average before ${averages(run.loadBefore)}, after ${averages(run.loadAfter)}  `,
    `Settings: window ${settings.windowMs} ms (the scaled minute); 3 deployments × ${settings.tpm} tokens and ${settings.rpm} requests per window (${fmt(costs.capacityTokensPerSecond, 0)} tokens/s); ` +
      `latency ${settings.ttftMs} ms + ${settings.perTokenMs} ms/token; 3 gateways sharing Redis, each running batch lines (concurrency ${settings.concurrency} per instance, ${settings.poolConcurrency} per pool). ` +
      `Interactive: ${settings.promptChars}-char prompt, max_tokens ${settings.maxTokens} (usage ${costs.interactive.usage} tokens), ${fmt(costs.interactiveRps, 1)} requests/s = ${pct(settings.load, 0)} of capacity, constant arrivals, a 429 with a retry time honoured once. ` +
      `Batch: ${settings.lines} lines, ${settings.linePromptChars}-char prompt, max_tokens ${settings.lineMaxTokens} (usage ${costs.line.usage} tokens), through the openai SDK; ` +
      `background.reserve ${settings.reserve}, so background may fill each deployment up to ${pct(1 - settings.reserve, 0)} of its budgets. ` +
      `${settings.rounds} round(s), each one phase alone (${settings.aloneWindows} windows) and one with the batch (from batches.create until the batch ended, cap ${settings.batchCapMs / 1000} s), alone first in odd rounds and the batch first in even ones; ` +
      `${settings.warmupWindows} warm-up window(s) of interactive load before each, not measured; each phase in a pool of its own, the simulator reset between.`,
  ];
}

function noteLines(run: BackgroundRun, file: string): string[] {
  const { reports } = run;
  const errors = reports
    .map(
      (r) =>
        `${phaseLabel(r)}: ${
          Object.entries(r.clientErrorsByKind)
            .map(([k, v]) => `${k} ${v}`)
            .join(', ') || 'none'
        }`,
    )
    .join('; ');
  const own = reports
    .map(
      (r) =>
        `${phaseLabel(r)}: gateways ${fmt(r.cores.gateways, 2)}, simulator ${fmt(r.cores.simulator, 2)}, Redis ${fmt(r.cores.redis, 2)}, client and tap ${fmt(r.cores.client, 2)}`,
    )
    .join('; ');
  const tap = reports.map((r) => `${phaseLabel(r)}: ${r.tapMinusSimulator.calls} calls, ${r.tapMinusSimulator.tokens} tokens`).join('; ');
  return [
    "How it is measured: the gateways reach the simulator through a tap in the benchmark process that notes each upstream call with the simulator's answer and tells batch lines (x-request-id `batch_…`) from interactive calls; " +
      "utilisation per window is the tokens the simulator served in each sliding window (sampled every 500 ms) inside the measured part ÷ the window's budget, and its median is the figure compared; " +
      "over the part it is the tokens served from its start to its end ÷ the budget of that time (a batch may take a whole window's room at its start, so this can exceed the window figure on short parts); " +
      '"added p50" is, per interactive 200, the client\'s latency minus the time its upstream calls took at the tap; ' +
      'the ideal batch time is lines × tokens per line ÷ ((1 − reserve) × capacity − the interactive tokens per second of the same phase): the idle rate; ' +
      "a sliding window gives one window's room at once, so the best possible is about one window less.  ",
    `Client-visible errors by kind: ${errors}.  `,
    `Machine noise (CPU of processes outside the benchmark, cores): ${reports.map((r) => `${phaseLabel(r)}: ${fmt(r.cores.foreign, 2)}`).join('; ')}.  `,
    `Our processes (cores): ${own}.  `,
    `Client schedule lag p99: ${reports.map((r) => `${phaseLabel(r)}: ${fmt(r.scheduleLag?.p99, 1)} ms`).join('; ')}.  `,
    `The tap's counts minus the simulator's over each measured part (calls in flight at its edges): ${tap}.  `,
    ...(run.batchSkipped ? [`The phases with the batch did not run: ${run.batchSkipped}.  `] : []),
    `Raw figures: \`loadtest/results/${file.split('/').pop()}\` (not committed).`,
  ];
}

/** Rewrites the results section of docs/background.md (the file gets a title and the markers when new). */
export function writeResultsDoc(run: BackgroundRun, written: { file: string; revision: string }): void {
  const main = mainTable(run.reports);
  const ranges = rangeTable(run.reports);
  const batches = batchTable(run.reports);
  const section = [
    ...runLines(run, written.revision),
    '',
    '### Phases',
    '',
    markdownTable(main.header, main.rows),
    '',
    '### Alone and with the batch, over the rounds (min – max)',
    '',
    markdownTable(ranges.header, ranges.rows),
    '',
    ...(batches.rows.length ? ['### The batch against its ideal', '', markdownTable(batches.header, batches.rows), ''] : []),
    ...(run.checks.length ? ['### Against the targets', '', markdownTable(CHECK_HEADER, checkRows(run.checks)), ''] : []),
    ...noteLines(run, written.file),
  ].join('\n');
  writeDocSection(join(REPO_ROOT, 'docs', 'background.md'), DOC_START, DOC_END, section, '# Background lane\n\n');
  log('wrote docs/background.md (results section)');
}
