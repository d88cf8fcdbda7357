/**
 * The bench's output: the tables on stdout, the JSON in loadtest/results/, and (unless --no-doc)
 * the results section of docs/benchmarks.md and the chart docs/benchmarks.svg.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import type { DeploymentStats } from '../../shared/simulator/types.ts';
import { fmt, markdownTable, pct, textTable } from '../lib/format.ts';
import { cpuModel, gitRevision, writeDocSection } from '../lib/report-doc.ts';
import { nginxBinary, REPO_ROOT } from '../lib/stack.ts';
import { barChart } from '../lib/svg.ts';
import { apiTable, ratioTable, type ApiRatios, type ApiRow } from './api-figures.ts';
import { API_NAMES, type ApiPhase } from './apis.ts';
import { addedToDirect, type Row, type Verdict } from './figures.ts';
import type { Phases } from './measure.ts';
import { API_POOL_SIZE, type BenchOptions } from './options.ts';
import type { Profile } from './profile.ts';

const log = (line: string) => process.stdout.write(`${line}\n`);

/** Everything a report is made of. */
export interface BenchReport {
  options: BenchOptions;
  startedAt: Date;
  loadBefore: number[];
  rows: Row[];
  verdicts: Verdict[];
  phases: Phases;
  /** Phase 4: chat, Responses create and follow-up per target. */
  apis: { phase: ApiPhase; rows: ApiRow[]; ratios: ApiRatios[] };
  profile: Profile | undefined;
  upstream: DeploymentStats;
}

interface Table {
  header: string[];
  rows: string[][];
}

export function resultsDir(): string {
  const dir = join(REPO_ROOT, 'loadtest', 'results');
  mkdirSync(dir, { recursive: true });
  return dir;
}

function mainTable(rows: Row[], { concurrency, rate }: BenchOptions): Table {
  const added = addedToDirect(rows);
  const addedOr = (row: Row, pick: (s: { p50: number; p99: number }) => number, of: 'rateLatency' | 'ttft') =>
    row.key === 'direct' ? '–' : fmt(added(row, pick, of), 2);
  const header = [
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
  return {
    header,
    rows: rows.map((row) => [
      row.label,
      fmt(row.closedRpsMedian, 0),
      fmt(row.closedRpsBest, 0),
      fmt(row.closed?.p50, 2),
      fmt(row.closed?.p95, 2),
      fmt(row.closed?.p99, 2),
      fmt(row.rateLatency?.p50, 2),
      fmt(row.rateLatency?.p99, 2),
      addedOr(row, (s) => s.p50, 'rateLatency'),
      addedOr(row, (s) => s.p99, 'rateLatency'),
      fmt(row.ttft?.p50, 2),
      fmt(row.ttft?.p99, 2),
      addedOr(row, (s) => s.p50, 'ttft'),
      String(row.closedErrors + row.rateErrors + row.streamErrors),
    ]),
  };
}

function costTable(rows: Row[], { rate }: BenchOptions): Table {
  const header = [
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
  return {
    header,
    rows: rows.map((row) => [
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
    ]),
  };
}

const verdictTable = (verdicts: Verdict[]): Table => ({
  header: ['goal', 'measured', 'result'],
  rows: verdicts.map((v) => [v.goal, v.measured, v.result]),
});

/** Phase 4's notes: targets without the Responses API, follow-up runs left out. */
function apiNotes(phase: ApiPhase): string[] {
  return [
    ...[...phase.unavailable].map(([key, why]) => `${key}: no Responses API (the probe got ${why.slice(0, 160)}), n/a`),
    ...(phase.skippedRuns > 0 ? [`${phase.skippedRuns} follow-up run(s) left out: no response of their pool could be created`] : []),
  ];
}

export function printReport(report: BenchReport): void {
  const { profile, upstream, apis, options } = report;
  for (const table of [mainTable(report.rows, report.options), costTable(report.rows, report.options), verdictTable(report.verdicts)]) {
    log('');
    log(textTable(table.header, table.rows));
  }
  if (options.apiKeys.length) {
    const detail = apiTable(apis.rows, options);
    const ratios = ratioTable(apis.ratios);
    log(`\nAPIs at ${options.apiRate} rps (+: against direct for the same API; ÷ chat: added median over the chat completion's)`);
    log(textTable(detail.header, detail.rows));
    if (ratios.rows.length) {
      log('');
      log(textTable(ratios.header, ratios.rows));
    }
    for (const note of apiNotes(apis.phase)) log(note);
  }
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
}

interface Machine {
  cores: number;
  cpu: string;
  node: string;
  nginx: string;
  loadAverageBefore: number[];
  loadAverageAfter: number[];
}

function machineOf(loadBefore: number[]): Machine {
  return {
    cores: cpus().length,
    cpu: cpuModel(),
    node: process.version,
    nginx:
      spawnSync(nginxBinary()!, ['-v'], { encoding: 'utf8' })
        .stderr.trim()
        .replace(/^nginx version: /, '') || 'nginx',
    loadAverageBefore: loadBefore,
    loadAverageAfter: loadavg(),
  };
}

/** Writes loadtest/results/bench-<date>.json; returns its path and what the doc needs of it. */
export function writeResult(report: BenchReport): { file: string; machine: Machine; revision: string } {
  const { options, startedAt } = report;
  const { rounds, closedMs, concurrency, rate, rateMs, streamRate, streamMs, nginxWorkers, apiRate, apiMs } = options;
  const machine = machineOf(report.loadBefore);
  const { apis } = report;
  const output = {
    command: options.command,
    at: startedAt.toISOString(),
    revision: gitRevision(),
    machine,
    settings: {
      rounds,
      closedMs,
      concurrency,
      rate,
      rateMs,
      streamRate,
      streamMs,
      nginxWorkers,
      targets: options.keys,
      apiRate,
      apiMs,
      apiTargets: options.apiKeys,
      apiPoolSize: API_POOL_SIZE,
      ...(options.compareWith ? { compareWith: { dir: options.compareWith, revision: gitRevision(options.compareWith) } } : {}),
    },
    rows: report.rows,
    verdicts: report.verdicts,
    apis: {
      rows: apis.rows,
      ratios: apis.ratios,
      unavailable: Object.fromEntries(apis.phase.unavailable),
      skippedRuns: apis.phase.skippedRuns,
    },
    profile: report.profile,
    runs: Object.fromEntries(
      Object.entries(report.phases).map(([phase, map]) => [
        phase,
        Object.fromEntries(
          [...map].map(([key, agg]) => [key, { cpu: agg.cpu, runs: agg.runs.map(({ samples: _samples, ...rest }) => rest) }]),
        ),
      ]),
    ),
    apiRuns: Object.fromEntries(
      [...apis.phase.runs].map(([key, byApi]) => [
        key,
        Object.fromEntries(
          API_NAMES.map((api) => [
            api,
            { cpu: byApi[api].cpu, rounds: byApi[api].rounds, runs: byApi[api].runs.map(({ samples: _samples, ...rest }) => rest) },
          ]),
        ),
      ]),
    ),
  };
  const file = join(resultsDir(), `bench-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(output, null, 2));
  log(`\nresult: ${file}`);
  return { file, machine, revision: output.revision };
}

function chart(report: BenchReport, cores: number): string {
  const { rows, options, startedAt } = report;
  return barChart(
    `Spillway gateway overhead — ${startedAt.toISOString().slice(0, 10)}, ${cores} cores (shared), node ${process.version}`,
    rows.map((r) => r.label),
    [
      {
        title: `Throughput, closed loop at concurrency ${options.concurrency} (higher is better)`,
        unit: 'rps',
        series: [
          { name: 'median round', color: '#4e79a7', values: rows.map((r) => r.closedRpsMedian) },
          { name: 'best round', color: '#a0cbe8', values: rows.map((r) => r.closedRpsBest) },
        ],
      },
      {
        title: `Latency at a fixed ${options.rate} requests/s (lower is better)`,
        unit: 'ms',
        series: [
          { name: 'p50', color: '#59a14f', values: rows.map((r) => r.rateLatency?.p50 ?? null) },
          { name: 'p99', color: '#e15759', values: rows.map((r) => r.rateLatency?.p99 ?? null) },
        ],
      },
    ],
    'Simulator latency 0. Generated by loadtest/bench.ts; see docs/benchmarks.md for the machine and the caveats.',
  );
}

function profileSection(profile: Profile): string[] {
  return [
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
  ];
}

function apiSection(report: BenchReport): string[] {
  const { apis, options } = report;
  const detail = apiTable(apis.rows, options);
  const ratios = ratioTable(apis.ratios);
  const notes = apiNotes(apis.phase);
  return [
    '### Chat, Responses create, Responses follow-up',
    '',
    `At a fixed ${options.apiRate} requests/s, each API in turn, in every round: a chat completion (as above), a Responses create (\`POST /openai/v1/responses\`, \`model\` the pool, the same 400-character prompt as \`input\`, \`max_output_tokens\` 16), and a follow-up (the same with \`previous_response_id\` naming one of ${API_POOL_SIZE} responses created through the same target just before the run: a gateway's restore of the id and the pinning to the resource that holds it are in it). ` +
      "`+p50`/`+p90`: against `direct`'s runs of the same API; `by round`: the range of the rounds' own figures (how much the noise moves them); `÷ chat`: the API's added median over the chat completion's of the same target.",
    '',
    markdownTable(ratios.header, ratios.rows),
    '',
    markdownTable(detail.header, detail.rows),
    '',
    ...(notes.length ? [...notes.map((n) => `- ${n}`), ''] : []),
  ];
}

function docSection(report: BenchReport, written: { file: string; machine: Machine; revision: string }): string {
  const { options, startedAt, loadBefore } = report;
  const { machine } = written;
  const { rounds, concurrency, closedMs, rate, rateMs, streamRate, streamMs, nginxWorkers, apiRate, apiMs } = options;
  const main = mainTable(report.rows, options);
  const cost = costTable(report.rows, options);
  const verdicts = verdictTable(report.verdicts);
  return [
    `Command: \`${options.command}\`  `,
    `Date: ${startedAt.toISOString()}  `,
    `Revision: ${written.revision}  `,
    `Machine: ${machine.cores} cores (${machine.cpu}), node ${machine.node}, ${machine.nginx}; load average before ${loadBefore.map((v) => v.toFixed(2)).join(' ')}, after ${machine.loadAverageAfter.map((v) => v.toFixed(2)).join(' ')}  `,
    `Settings: ${rounds} interleaved round(s); closed loop ${concurrency} workers × ${closedMs / 1000} s per target per round; fixed rate ${rate} rps × ${rateMs / 1000} s; streams ${streamRate} rps × ${streamMs / 1000} s (5 tokens, include_usage);` +
      (options.apiKeys.length ? ` APIs ${apiRate} rps × ${apiMs / 1000} s per API (${options.apiKeys.join(', ')});` : '') +
      ` nginx ${nginxWorkers} worker(s).` +
      (options.compareWith ? ` "(before)": the gateway of ${gitRevision(options.compareWith)}, in the same rounds.` : ''),
    '',
    '![throughput and latency per target](benchmarks.svg)',
    '',
    '### Throughput and latency',
    '',
    '`+p50`/`+p99`/`+TTFT` are the differences against `direct` at the same fixed rate (added latency).',
    '',
    markdownTable(main.header, main.rows),
    '',
    ...(options.apiKeys.length ? apiSection(report) : []),
    '### Cost',
    '',
    "`foreign cores`: CPU that processes outside this benchmark used meanwhile, in cores (the noise of the shared machine); `generator cores`: the load generator's own use (near 1.0 means it, not the target, limited the closed loop).",
    '',
    markdownTable(cost.header, cost.rows),
    '',
    '### Against the targets',
    '',
    markdownTable(verdicts.header, verdicts.rows),
    '',
    ...(report.profile ? profileSection(report.profile) : []),
    `Raw figures: \`loadtest/results/${written.file.split('/').pop()}\` (not committed).`,
  ].join('\n');
}

const START = '<!-- bench:results:start (generated by loadtest/bench.ts; edit outside these markers) -->';
const END = '<!-- bench:results:end -->';

export function writeDocs(report: BenchReport, written: { file: string; machine: Machine; revision: string }): void {
  writeFileSync(join(REPO_ROOT, 'docs', 'benchmarks.svg'), chart(report, written.machine.cores));
  const section = docSection(report, written);
  writeDocSection(join(REPO_ROOT, 'docs', 'benchmarks.md'), START, END, section, '# Benchmarks\n\n## Latest results\n\n');
  log('wrote docs/benchmarks.md and docs/benchmarks.svg');
}
