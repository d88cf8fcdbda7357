/**
 * Gateway overhead benchmark: the same load, in one run, against
 *   direct      the simulator itself (latency model 0: it answers at once)
 *   nginx       nginx alone, proxying to the simulator
 *   gw1-mem     one gateway process, in-memory store (the embedded default; no Redis)
 *   gw1-redis   one gateway process with Redis (the production setup)
 *   gw3-redis   three gateway processes with Redis behind nginx
 *   [gw1-redis-info  as gw1-redis with LOG_LEVEL=info, stdout to a file: the per-request log's cost; opt-in]
 *   [gw1-mem@before, gw1-redis@before  gw1-mem and gw1-redis from another checkout (--compare-with DIR)]
 *
 *   npm run bench [-- --rounds 3 --duration 3s --concurrency 32 --rate 200 --profile --no-doc]
 *
 * Phases (each target in turn, the order rotated every round, to spread the machine's noise):
 *   1. closed loop: `concurrency` workers for `duration` per round → requests/s and latency at saturation;
 *   2. fixed rate (open model, `rate` rps) → latency at a moderate load, added latency vs direct;
 *   3. streams at `stream-rate` rps (a few tokens, ttft 0) → TTFT added vs direct;
 *   4. APIs at `api-rate` rps (direct, gw1-mem, gw1-redis, and their @before twins, by default):
 *      a chat completion, a Responses create and a Responses follow-up (previous_response_id of a
 *      response created through the same target just before), each API in turn → the latency each
 *      adds vs direct, and a create's and a follow-up's added median over chat's (bench/apis.ts).
 * CPU per request comes from /proc/<pid>/stat (utime+stime) of each process around each run; memory
 * from /proc/<pid>/status. The CPU that other processes on the machine used meanwhile is reported
 * too ("foreign cores"), as a measure of how noisy the run was.
 *
 * Writes loadtest/results/bench-<date>.json, and (unless --no-doc) the results section of
 * docs/benchmarks.md and the chart docs/benchmarks.svg.
 *
 * The parts, in loadtest/bench/: options.ts (command line), targets.ts (the stack and the targets),
 * measure.ts (the runs and their CPU), figures.ts (rows and verdicts), apis.ts and api-figures.ts
 * (phase 4), profile.ts, report.ts.
 */
import { loadavg, cpus } from 'node:os';
import { join } from 'node:path';
import { ProcessSet } from '../shared/processes/process-set.ts';
import { memoryMb } from '../shared/processes/proc-stats.ts';
import { cpuModel } from './lib/report-doc.ts';
import { sumStats } from './lib/stack.ts';
import { apiRatiosOf, apiRowsOf } from './bench/api-figures.ts';
import { probeApis, runApiRound, warmUpApis } from './bench/apis.ts';
import { rowOf, verdictsOf, type Row } from './bench/figures.ts';
import { idleCost, runRounds, warmUp, type IdleCost, type Phases } from './bench/measure.ts';
import { hardCapMs, parseOptions, type BenchOptions } from './bench/options.ts';
import { profileGateway } from './bench/profile.ts';
import { printReport, resultsDir, writeDocs, writeResult } from './bench/report.ts';
import { smokeTest, startBenchStack, type BenchStack } from './bench/targets.ts';

const log = (line: string) => process.stdout.write(`${line}\n`);

function logStart(options: BenchOptions, stack: BenchStack, loadBefore: number[]): void {
  const { rounds, concurrency, closedMs, rate, rateMs, streamRate, streamMs, apiRate, apiMs, apiKeys } = options;
  log(
    `bench: ${stack.targets.length} targets, ${rounds} round(s); closed loop c=${concurrency} ${closedMs / 1000}s, fixed ${rate} rps ${rateMs / 1000}s, streams ${streamRate} rps ${streamMs / 1000}s` +
      (apiKeys.length ? `, APIs ${apiRate} rps ${apiMs / 1000}s each (${apiKeys.join(', ')})` : ''),
  );
  if (options.compareWith) log(`before: gateway/main.ts of ${options.compareWith}`);
  log(
    `machine: ${cpus().length} cores, ${cpuModel()}, node ${process.version}, load average ${loadBefore.map((v) => v.toFixed(2)).join(' ')}`,
  );
}

/** Each target's figures, with its gateways' memory as it is after the rounds. */
function figures(stack: BenchStack, phases: Phases, idle: IdleCost): Row[] {
  const memory = new Map(stack.targets.map((t) => [t.key, t.gatewayPids.map((pid) => memoryMb(pid))]));
  return stack.targets.map((target) => rowOf(target, phases, idle, memory.get(target.key) ?? []));
}

async function main(): Promise<number> {
  const options = parseOptions();
  if (typeof options === 'number') return options;
  const processes = new ProcessSet();
  processes.capRunTime(hardCapMs(options));
  const startedAt = new Date();
  const loadBefore = loadavg();
  try {
    const profileDir = join(resultsDir(), `profile-${startedAt.toISOString().replace(/[:.]/g, '-')}`);
    const stack = await startBenchStack(processes, options);
    await smokeTest(stack.targets);
    const apiPhase = await probeApis(stack, options);
    logStart(options, stack, loadBefore);
    // Idle cost: what each target's gateway processes burn with no traffic (timers, leases, metrics).
    const idle = await idleCost(stack.targets);
    for (const target of stack.targets) await warmUp(stack, target, options.concurrency);
    await warmUpApis(stack, apiPhase);
    const phases = await runRounds(stack, options, (round) => runApiRound(stack, options, apiPhase, round));
    const rows = figures(stack, phases, idle);
    const apiRows = apiRowsOf(apiPhase, options, new Map(stack.targets.map((t) => [t.key, t.gatewayPids])));
    const apis = { phase: apiPhase, rows: apiRows, ratios: apiRatiosOf(apiRows) };
    const upstream = sumStats(await stack.simulator.stats());
    const verdicts = verdictsOf(rows, options);
    const profile = options.profile ? await profileGateway(processes, stack, options, profileDir) : undefined;
    await stack.generator.stop();
    const report = { options, startedAt, loadBefore, rows, verdicts, phases, apis, profile, upstream };
    printReport(report);
    const written = writeResult(report);
    if (!options.noDoc) writeDocs(report, written);
    return 0;
  } finally {
    await processes.stopAll();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(2);
  },
);
