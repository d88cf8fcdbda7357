/**
 * The admission benchmark's report: the verdicts against README's promises, the tables on stdout,
 * the JSON in loadtest/results/ and (unless --no-doc) the results section of docs/admission.md.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { fmt, markdownTable, pct, textTable } from '../lib/format.ts';
import { cpuModel, gitRevision, writeDocSection } from '../lib/report-doc.ts';
import { REPO_ROOT, type GatewayHandle } from '../lib/stack.ts';
import { timelineOf, type PhaseReport } from './analysis.ts';
import type { PhaseRaw } from './phase.ts';
import type { ProbeReport } from './probe.ts';
import { loadLabel, POLICY_LABEL, type Costs, type Policy, type RunOptions } from './settings.ts';

const log = (line: string) => process.stdout.write(`${line}\n`);

interface Verdict {
  target: string;
  policy: Policy;
  load: number;
  measured: string;
  pass: boolean;
}

export function verdicts(reports: PhaseReport[], probes: ProbeReport[]): Verdict[] {
  const out: Verdict[] = [];
  for (const r of reports) {
    if (r.load < 1) {
      out.push({
        target: 'no client-visible errors',
        policy: r.policy,
        load: r.load,
        measured: `${r.clientErrors} of ${r.requests}`,
        pass: r.clientErrors === 0,
      });
      out.push({
        target: 'upstream 429s < 1 % of upstream calls',
        policy: r.policy,
        load: r.load,
        measured: `${r.upstream.throttled} of ${r.upstream.received} (${pct(r.upstream429Share)})`,
        pass: r.upstream429Share < 0.01,
      });
    } else {
      out.push({
        target: 'tokens served ≥ 95 % of capacity',
        policy: r.policy,
        load: r.load,
        measured: pct(r.capacityShare, 1),
        pass: r.capacityShare >= 0.95,
      });
      const probe = probes.find((p) => p.policy === r.policy);
      const everyRetryTime = r.gateway429WithoutRetryAfter === 0;
      const noEarlyFigure = r.honouredRefusedUpstream === 0;
      const probeOk = probe !== undefined && probe.probed > 0 && probe.clean === probe.probed;
      out.push({
        target: 'every rejection told a retry time that works when honoured',
        policy: r.policy,
        load: r.load,
        measured:
          `429s without a retry time: ${r.gateway429WithoutRetryAfter}; ` +
          `honoured in the run: ${r.honouredOk}/${r.honoured} got 200, ${r.honouredRefusedAtGateway} refused by the gateway (room taken by new arrivals), ${r.honouredRefusedUpstream} admitted but throttled upstream; ` +
          `probe: ${probe ? `${probe.clean}/${probe.probed} clean` : 'not run'}`,
        pass: everyRetryTime && noEarlyFigure && probeOk,
      });
    }
  }
  return out;
}

function mainTable(reports: PhaseReport[]): { header: string[]; rows: string[][] } {
  const header = [
    'policy',
    'load',
    'offered req/s',
    'requests',
    'client errors',
    'gateway 429s',
    'honoured retries → 200',
    'upstream calls',
    'upstream 429s',
    'tokens served / capacity',
    'p50 ms',
    'p95 ms',
  ];
  const rows = reports.map((r) => [
    POLICY_LABEL[r.policy],
    loadLabel(r.load),
    fmt(r.offeredRps, 1),
    String(r.requests),
    `${r.clientErrors} (${pct(r.clientErrorRate, 1)})`,
    String(r.gateway429),
    r.honoured ? `${r.honouredOk}/${r.honoured} (${pct(r.honouredOk / r.honoured, 0)})` : '–',
    String(r.upstream.received),
    `${r.upstream.throttled} (${pct(r.upstream429Share, 1)})`,
    pct(r.capacityShare, 1),
    fmt(r.latency200?.p50, 0),
    fmt(r.latency200?.p95, 0),
  ]);
  return { header, rows };
}

function retryTable(reports: PhaseReport[]): { header: string[]; rows: string[][] } {
  const header = [
    'policy',
    'load',
    'served 1st try',
    'served after retry',
    '429s after an upstream 429',
    'retry-after p50 / p95 ms',
    'honoured: refused at gateway',
    'honoured: throttled upstream',
    'not retried (after phase end)',
    '200s after failover',
    'upstream calls / request',
    'end-to-end p95 ms (successes)',
    'gateway view − simulator’s, mean / p95 (of budget)',
  ];
  const rows = reports.map((r) => [
    POLICY_LABEL[r.policy],
    loadLabel(r.load),
    String(r.succeededFirstTry),
    String(r.honouredOk),
    String(r.gateway429AfterUpstream),
    r.retryAfterMs ? `${fmt(r.retryAfterMs.p50, 0)} / ${fmt(r.retryAfterMs.p95, 0)}` : '–',
    String(r.honouredRefusedAtGateway),
    String(r.honouredRefusedUpstream),
    String(r.notRetriedBeyondPhase),
    String(r.ok200AfterFailover),
    fmt(r.upstreamCallsPerRequest, 2),
    fmt(r.endToEndSuccess?.p95, 0),
    r.gatewayOvercount ? `${pct(r.gatewayOvercount.mean, 1)} / ${pct(r.gatewayOvercount.p95, 1)}` : '–',
  ]);
  return { header, rows };
}

function probeTable(probes: ProbeReport[]): { header: string[]; rows: string[][] } {
  const header = [
    'policy',
    'probes',
    'retry-after told (ms)',
    'honoured retry → 200',
    'clean (200 at the first deployment tried)',
    'honoured retry throttled upstream',
    'early copies (2 buckets before) admitted / sent',
    'cycles with room (skipped)',
  ];
  const rows = probes.map((p) => [
    POLICY_LABEL[p.policy],
    String(p.probed),
    p.cycles
      .filter((c) => c.kind === 'probed')
      .map((c) => fmt(c.retryAfterMs, 0))
      .join(', ') || '–',
    `${p.retryOk}/${p.probed}`,
    `${p.clean}/${p.probed}`,
    String(p.retryThrottledUpstream),
    `${p.earlyAdmitted}/${p.earlySent}`,
    String(p.cycles.filter((c) => c.kind === 'room').length),
  ]);
  return { header, rows };
}

const DOC_START = '<!-- admission:results:start (generated by loadtest/admission-bench.ts; edit outside these markers) -->';
const DOC_END = '<!-- admission:results:end -->';

function writeDoc(section: string): void {
  writeDocSection(join(REPO_ROOT, 'docs', 'admission.md'), DOC_START, DOC_END, section, '# Admission benchmark\n\n');
}

/** A finished run: everything its report is made of. */
export interface AdmissionRun {
  options: RunOptions;
  costs: Costs;
  startedAt: Date;
  loadBefore: number[];
  bucketPhaseMs: number | undefined;
  burstSize: number;
  raws: PhaseRaw[];
  reports: PhaseReport[];
  probes: ProbeReport[];
  checks: Verdict[];
  loadAfter: number[];
  runSeconds: number;
}

const averages = (load: number[]) => load.map((v) => v.toFixed(2)).join(' ');
const phaseLabel = (r: { policy: Policy; load: number }) => `${POLICY_LABEL[r.policy]} ${loadLabel(r.load)}`;

/** The log line of a measured phase. */
export function measuredLine(report: PhaseReport): string {
  const overcount = report.gatewayOvercount;
  return (
    `    measured: ${report.requests} requests, client errors ${report.clientErrors}, gateway 429s ${report.gateway429}, upstream ${report.upstream.received} calls / ${report.upstream.throttled} 429s, ` +
    `tokens ${pct(report.capacityShare, 1)} of capacity; foreign load ${fmt(report.cores.foreign, 2)} cores, client lag p99 ${fmt(report.scheduleLag?.p99, 1)} ms, ` +
    `${overcount ? `gateway view − simulator's: mean ${pct(overcount.mean, 1)}, p95 ${pct(overcount.p95, 1)} of the budget; ` : ''}` +
    `${overcount?.atRefusals ? `simulator's use at refusals: min ${pct(overcount.atRefusals.min, 1)}, p50 ${pct(overcount.atRefusals.p50, 1)}; ` : ''}` +
    `realtime − monotonic clock ${report.clockDriftMs >= 0 ? '+' : ''}${fmt(report.clockDriftMs, 1)} ms (range ${fmt(report.clockRangeMs, 1)} ms)`
  );
}

export function probeLine(probe: ProbeReport): string {
  return `    honesty probe: ${probe.probed} probes, retry-after ${probe.cycles.map((c) => (c.kind === 'probed' ? fmt(c.retryAfterMs, 0) : c.kind)).join(', ')} ms → ${probe.retryOk} got 200, ${probe.clean} clean, ${probe.retryThrottledUpstream} throttled upstream`;
}

const checkRows = (checks: Verdict[]) =>
  checks.map((c) => [c.target, POLICY_LABEL[c.policy], loadLabel(c.load), c.measured, c.pass ? 'PASS' : 'FAIL']);
const CHECK_HEADER = ['target', 'policy', 'load', 'measured', 'result'];

export function printReport(run: AdmissionRun): void {
  const main = mainTable(run.reports);
  const retries = retryTable(run.reports);
  const probeRows = probeTable(run.probes);
  log('');
  log(textTable(main.header, main.rows));
  log('');
  log(textTable(retries.header, retries.rows));
  if (run.probes.length) {
    log('');
    log(textTable(probeRows.header, probeRows.rows));
  }
  log('');
  log(textTable(CHECK_HEADER, checkRows(run.checks)));
  log(`\nrun time ${fmt(run.runSeconds, 0)} s; load average before ${averages(run.loadBefore)}, after ${averages(run.loadAfter)}`);
}

/** Writes loadtest/results/admission-<date>.json (and --json FILE, and with --keep-logs the gateways' logs). */
export function writeResult(run: AdmissionRun, gateways: GatewayHandle[]): { file: string; revision: string } {
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
    bucketPhaseMs: run.bucketPhaseMs,
    runSeconds: run.runSeconds,
    reports: run.reports,
    probes: run.probes,
    verdicts: run.checks,
    phases: run.raws.map(({ records, lag: _lag, ...rest }) => ({
      ...rest,
      // Per-second client timeline (by arrival second): arrivals, final 200s, first-try 429s.
      timeline: timelineOf(records),
    })),
  };
  const file = join(resultsDir(), `admission-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(output, null, 2));
  if (options.json) writeFileSync(resolve(options.json), JSON.stringify(output, null, 2));
  log(`result: ${file}${options.json ? ` and ${resolve(options.json)}` : ''}`);
  if (options.keepLogs) {
    for (const gateway of gateways) copyFileSync(gateway.log, file.replace(/\.json$/, `-${gateway.name}.log`));
    log(`gateway logs: ${file.replace(/\.json$/, '-gateway-N.log')}`);
  }
  return { file, revision: output.revision };
}

function resultsDir(): string {
  const dir = join(REPO_ROOT, 'loadtest', 'results');
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** The doc's header lines: the command, the date, the machine, the settings. */
function runLines(run: AdmissionRun, revision: string): string[] {
  const { settings, command } = run.options;
  const { costs, bucketPhaseMs } = run;
  return [
    `Command: \`${command}\`  `,
    `Date: ${run.startedAt.toISOString()}; run time ${fmt(run.runSeconds, 0)} s  `,
    `Revision: ${revision}  `,
    `Machine: ${cpus().length} cores (${cpuModel()}), shared; node ${process.version}; load average before ${averages(run.loadBefore)}, after ${averages(run.loadAfter)}  `,
    `Settings: ${settings.stripRatelimitHeaders ? 'DIAGNOSTIC, x-ratelimit-* headers stripped on the way to the gateways; ' : ''}window ${settings.windowMs} ms (the scaled minute${settings.gatewayWindowMs !== settings.windowMs ? `; the gateways' window ${settings.gatewayWindowMs} ms` : ''}); 3 deployments × ${settings.tpm} tokens and ${settings.rpm} requests per window; ` +
      `latency ${settings.ttftMs} ms + ${settings.perTokenMs} ms/token; request ${settings.promptChars}-char prompt, max_tokens ${settings.maxTokens} (simulator estimate ${costs.simulatorEstimate}, gateway estimate ${costs.gatewayEstimate}, usage ${costs.usage} tokens); ` +
      `capacity ${costs.requestsPerWindowPerDeployment} requests/window/deployment = ${fmt(costs.capacityRps, 1)} requests/s summed; ${settings.arrivals} arrivals; ` +
      `bucket grids: the simulator's buckets end ${bucketPhaseMs === undefined ? '(not measured)' : `${fmt(bucketPhaseMs, 0)} ms`} after the gateways'; ` +
      `each phase ${settings.warmupWindows} warm-up window(s) at ${settings.warmupLoad === undefined ? 'the phase load, at most 100 %,' : `${loadLabel(settings.warmupLoad)} of capacity`} + ${settings.windows} measured windows; ${settings.probes} honesty probes per overload phase (burst ${run.burstSize}).`,
  ];
}

/** The doc's closing notes: errors by kind, the machine's noise, our CPU, the client's lag, the clocks. */
function noteLines(run: AdmissionRun, file: string): string[] {
  const { reports } = run;
  const noise = reports.map((r) => `${phaseLabel(r)}: ${fmt(r.cores.foreign, 2)}`).join('; ');
  const own = reports
    .map(
      (r) =>
        `${phaseLabel(r)}: gateways ${fmt(r.cores.gateways, 2)}, simulator ${fmt(r.cores.simulator, 2)}, Redis ${fmt(r.cores.redis, 2)}, client ${fmt(r.cores.client, 2)}`,
    )
    .join('; ');
  const lagLine = reports.map((r) => `${phaseLabel(r)}: ${fmt(r.scheduleLag?.p99, 1)} ms`).join('; ');
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
  return [
    `Client-visible errors by kind: ${errors}.  `,
    `Machine noise (CPU of processes outside the benchmark, cores): ${noise}.  `,
    `Our processes (cores): ${own}.  `,
    `Client schedule lag p99: ${lagLine}.  `,
    `Realtime clock (Redis, the gateways' windows) against the monotonic clock (the simulator's windows) over each measured part: ${reports.map((r) => `${phaseLabel(r)}: ${r.clockDriftMs >= 0 ? '+' : ''}${fmt(r.clockDriftMs, 1)} ms (range ${fmt(r.clockRangeMs, 1)} ms)`).join('; ')}.  `,
    `Raw figures: \`loadtest/results/${file.split('/').pop()}\` (not committed).`,
  ];
}

/** Rewrites the results section of docs/admission.md. */
export function writeResultsDoc(run: AdmissionRun, written: { file: string; revision: string }): void {
  const main = mainTable(run.reports);
  const retries = retryTable(run.reports);
  const probeRows = probeTable(run.probes);
  const section = [
    ...runLines(run, written.revision),
    '',
    '### Results',
    '',
    markdownTable(main.header, main.rows),
    '',
    '### Retries and failovers',
    '',
    markdownTable(retries.header, retries.rows),
    '',
    ...(run.probes.length
      ? ['### Honesty probe (after the 150 % phase, nothing else arriving)', '', markdownTable(probeRows.header, probeRows.rows), '']
      : []),
    '### Against the targets',
    '',
    markdownTable(CHECK_HEADER, checkRows(run.checks)),
    '',
    ...noteLines(run, written.file),
  ].join('\n');
  writeDoc(section);
  log('wrote docs/admission.md (results section)');
}
