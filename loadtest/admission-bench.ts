/**
 * Admission benchmark: does token-aware admission keep the promises of README "Admission"?
 *
 *   npm run bench:admission [-- --windows 3 --probes 5 --no-doc]
 *
 * One run starts, all on loopback and as children of this process (loadtest/lib/stack.ts): a private
 * redis-server, the AOAI simulator with three Standard deployments whose token budgets are enforced
 * as Azure enforces them (arrival estimate, sliding window, rejected requests counted), and three
 * gateway processes sharing the Redis. The same offered load (a constant arrival rate, or Poisson
 * with --arrivals poisson) then runs against two policies, each in its own pool (its own Redis key
 * space), with the simulator reset between phases:
 *
 *   spillway   least-requests, the deployments' tpm/rpm in the gateway config: admission
 *   baseline   round-robin, no budgets in the config: only the cooldown after a 429 and failover
 *              (the seed's policy); maxAttempts 3 in both
 *
 * at 90 % and at 150 % of the deployments' summed capacity. Each phase is one warm-up window (not in
 * the figures; at the phase's load but at most 100 %, so that the measured part starts from a full and
 * evenly spread window: a step from nothing to 150 % leaves a burst-and-gap pattern that repeats every
 * window and makes the served share depend on where the measurement starts) and N measured windows.
 * The client spreads requests over the three gateways and, on a 429 that names a retry time, honours
 * it once: it re-sends the same request after exactly retry-after-ms, if that is still within the
 * phase. After each 150 % phase an "honesty probe" fills the pool again with a burst, sends one
 * request once the burst is decided, honours the retry time it is told with nothing else arriving,
 * and checks that the retry gets 200 at the first deployment tried.
 *
 * Ground truth for the gateways' own view: /admin/pools (ADMIN_API_KEY) is sampled every 500 ms and
 * compared with what the simulator counts (the upstream calls of the last window). Diagnostics:
 * --gateway-window-ms, --strip-ratelimit-headers, --keep-logs (see --help and docs/admission.md).
 *
 * Time is scaled: the simulator's and the gateway's window ("minute") is --window-ms (default 6 s),
 * so a budget of T tokens per window stands for T tokens per minute.
 *
 * Prints the tables, writes loadtest/results/admission-<date>.json and (unless --no-doc) the results
 * section of docs/admission.md. Exit code 99 when a spillway target fails, 2 on a setup failure.
 * The client runs in this process: at these rates (under 200 requests/s) it is idle most of the time,
 * and its schedule lag is reported so that a saturated machine shows.
 *
 * The parts, in loadtest/admission/: settings.ts (command line, constants, costs), client.ts, stack.ts,
 * phase.ts (one phase), analysis.ts (its figures), probe.ts (the honesty probe), report.ts.
 */
import { loadavg } from 'node:os';
import { ProcessSet } from '../shared/processes/process-set.ts';
import { analyse, type PhaseReport } from './admission/analysis.ts';
import { fmt } from './lib/format.ts';
import { runPhase, type PhaseRaw } from './admission/phase.ts';
import { honestyProbe, type ProbeReport } from './admission/probe.ts';
import { measuredLine, printReport, probeLine, verdicts, writeResult, writeResultsDoc } from './admission/report.ts';
import {
  benchmarkRequest,
  DEPLOYMENT_IDS,
  hardCapMs,
  loadLabel,
  parseOptions,
  phaseMs,
  POLICY_LABEL,
  type Costs,
  type Settings,
} from './admission/settings.ts';
import { logSetup, measureBucketGrids, startAdmissionStack, warmUp, type Stack } from './admission/stack.ts';

const log = (line: string) => process.stdout.write(`${line}\n`);

interface Phases {
  raws: PhaseRaw[];
  reports: PhaseReport[];
  probes: ProbeReport[];
  burstSize: number;
}

/** Every load against every policy, each phase followed (above 100 %) by its honesty probe, the simulator reset between. */
async function runPhases(stack: Stack, settings: Settings, costs: Costs, body: Buffer): Promise<Phases> {
  const burstSize = Math.max(8, Math.ceil((DEPLOYMENT_IDS.length * costs.requestsPerWindowPerDeployment) / 6));
  const phases: Phases = { raws: [], reports: [], probes: [], burstSize };
  for (const load of settings.loads) {
    for (const policy of settings.policies) {
      log(
        `\n  phase ${POLICY_LABEL[policy]} at ${loadLabel(load)}: ${fmt(costs.capacityRps * load, 1)} requests/s for ${phaseMs(settings) / 1000} s (first ${(settings.warmupWindows * settings.windowMs) / 1000} s at ${fmt(costs.capacityRps * (settings.warmupLoad ?? Math.min(load, 1)), 1)}/s, not measured)`,
      );
      const raw = await runPhase(stack, settings, policy, load, costs.capacityRps, body, log);
      const report = analyse(raw, settings, costs.simulatorEstimate);
      phases.raws.push(raw);
      phases.reports.push(report);
      log(measuredLine(report));
      if (load > 1 && settings.probes > 0) {
        const probe = await honestyProbe(stack, settings, policy, raw.pool, burstSize, body);
        phases.probes.push(probe);
        log(probeLine(probe));
      }
      await stack.simulator.reset();
    }
  }
  return phases;
}

async function main(): Promise<number> {
  const options = parseOptions();
  if (typeof options === 'number') return options;
  const { settings } = options;
  const { body, costs } = benchmarkRequest(settings);
  const processes = new ProcessSet();
  processes.capRunTime(hardCapMs(settings));
  const startedAt = new Date();
  const wallStart = performance.now();
  const loadBefore = loadavg();
  let stack: Stack | undefined;
  try {
    stack = await startAdmissionStack(processes, settings);
    logSetup(stack, settings, costs, loadBefore);
    await warmUp(stack, body);
    const bucketPhaseMs = await measureBucketGrids(stack, settings);
    const phases = await runPhases(stack, settings, costs, body);
    const checks = verdicts(phases.reports, phases.probes);
    const loadAfter = loadavg();
    const runSeconds = (performance.now() - wallStart) / 1000;
    const run = { options, costs, startedAt, loadBefore, bucketPhaseMs, ...phases, checks, loadAfter, runSeconds };
    printReport(run);
    const written = writeResult(run, stack.gateways);
    if (!options.noDoc) writeResultsDoc(run, written);
    return checks.some((c) => c.policy === 'spillway' && !c.pass) ? 99 : 0;
  } finally {
    stack?.client.close();
    await processes.stopAll();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench:admission: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(2);
  },
);
