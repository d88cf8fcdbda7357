/**
 * Background benchmark: does the Batch API's lane use the pool's idle capacity without taking any an
 * interactive request needs? (issue 12, "Measure")
 *
 *   npm run bench:background [-- --rounds 2 --lines 2000 --no-doc]
 *
 * One run starts, all on loopback and as children of this process: a private redis-server, the AOAI
 * simulator with three Standard deployments whose budgets are enforced as Azure enforces them, an
 * upstream tap in this process between the gateways and the simulator (it notes each call with the
 * simulator's answer and tells batch lines, x-request-id `batch_…`, from interactive calls), and three
 * gateway processes sharing the Redis, each running batch lines (BullMQ workers).
 *
 * Interactive load at --load (70 %) of the pool's capacity then runs in rounds of two phases, each in a
 * pool of its own, the simulator reset between: alone (a warm-up window, then N measured windows), and
 * with a batch of --lines (2 000) lines uploaded and created through the openai SDK once the warm-up
 * window is over, measured from batches.create until the batch ends. The order alternates (alone first
 * in odd rounds, the batch first in even ones) so that drift favours neither. With background.reserve
 * r (0.1 here), the lane fills each deployment only up to (1 − r) of its budgets, so the pool's
 * utilisation can rise from 70 % toward 90 %.
 *
 * Figures per phase: interactive client errors, interactive upstream 429s (the simulator's answers,
 * through the tap), p50 and the added p50 (each 200's latency minus its upstream time), the pool's
 * utilisation (tokens the simulator served ÷ budget); and the batch's time against its ideal (lines ×
 * tokens per line ÷ ((1 − r) × capacity − interactive use)). The whole run is bounded by a hard cap.
 *
 * Prints the tables, writes loadtest/results/background-<date>.json and (unless --no-doc) the results
 * section of docs/background.md. Exit code 99 when a check fails or the phases with the batch could not
 * run (the gateways do not serve the Batch API), 2 on a setup failure.
 *
 * The parts, in loadtest/background/: settings.ts, upstream-tap.ts, stack.ts, batch-client.ts (the
 * openai SDK side), phase.ts, analysis.ts, report.ts; the client, its traffic and CPU sampling are the
 * admission benchmark's (loadtest/admission/).
 */
import { loadavg } from 'node:os';
import { ProcessSet } from '../shared/processes/process-set.ts';
import { warmUp } from './admission/stack.ts';
import { analyse, type PhaseReport } from './background/analysis.ts';
import { runPhase, type PhaseRaw } from './background/phase.ts';
import { checksOf, phaseLine, printReport, writeResult, writeResultsDoc } from './background/report.ts';
import {
  costsOf,
  hardCapMs,
  interactiveBody,
  KIND_LABEL,
  parseOptions,
  phaseOrder,
  type Costs,
  type Settings,
} from './background/settings.ts';
import { batchApiStatus, logSetup, startBackgroundStack, type Stack } from './background/stack.ts';
import { fmt } from './lib/format.ts';

const log = (line: string) => process.stdout.write(`${line}\n`);

async function runPhases(
  stack: Stack,
  settings: Settings,
  costs: Costs,
  batchPossible: boolean,
): Promise<{ raws: PhaseRaw[]; reports: PhaseReport[] }> {
  const body = Buffer.from(JSON.stringify(interactiveBody(settings)));
  const raws: PhaseRaw[] = [];
  const reports: PhaseReport[] = [];
  for (const { kind, round } of phaseOrder(settings, batchPossible)) {
    log(`\n  round ${round}, ${KIND_LABEL[kind]}: ${fmt(costs.interactiveRps, 1)} interactive requests/s`);
    const raw = await runPhase(stack, settings, costs, kind, round, body, log);
    const report = analyse(raw, settings, costs);
    raws.push(raw);
    reports.push(report);
    log(phaseLine(report));
    await stack.simulator.reset();
  }
  return { raws, reports };
}

async function main(): Promise<number> {
  const options = parseOptions();
  if (typeof options === 'number') return options;
  const { settings } = options;
  const costs = costsOf(settings);
  const processes = new ProcessSet();
  processes.capRunTime(hardCapMs(settings));
  const startedAt = new Date();
  const wallStart = performance.now();
  const loadBefore = loadavg();
  let stack: Stack | undefined;
  try {
    stack = await startBackgroundStack(processes, settings);
    logSetup(stack, settings, costs, loadBefore);
    await warmUp(stack, Buffer.from(JSON.stringify(interactiveBody(settings))));
    const api = settings.aloneOnly ? { available: false, detail: '--alone-only' } : await batchApiStatus(stack);
    if (!api.available) log(`  the phases with the batch will not run (${api.detail})`);
    await stack.simulator.reset();
    const phases = await runPhases(stack, settings, costs, api.available);
    const checks = checksOf(phases.reports, settings.reserve, settings.load);
    const run = {
      options,
      costs,
      startedAt,
      loadBefore,
      loadAfter: loadavg(),
      runSeconds: (performance.now() - wallStart) / 1000,
      batchSkipped: api.available ? undefined : api.detail,
      ...phases,
      checks,
    };
    printReport(run);
    const written = writeResult(run, stack.gateways);
    if (!options.noDoc) writeResultsDoc(run, written);
    const failed = checks.some((c) => !c.pass) || (!api.available && !settings.aloneOnly);
    return failed ? 99 : 0;
  } finally {
    stack?.client.close();
    await processes.stopAll();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench:background: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(2);
  },
);
