/**
 * The driver's chaos phase: the schedule starts with the load (start), and once the load and its
 * drain are over (finish) the simulator is read, the in-flight counts are read at once and again
 * after the leases' leaseMs, every arrival is attributed to its window, and the report is printed.
 * stop() (every way out of the driver) cancels what is left of the schedule and undoes what is active.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { alive } from '../../shared/processes/process-set.ts';
import type { RunResult } from '../lib/protocol.ts';
import { stackActions, type ChaosStack } from './actions.ts';
import { readDrift, type DeploymentRef } from './drift.ts';
import { attribute, chaosChecks, printChaos, type ChaosReport } from './report.ts';
import { epochMs, runChaos, type ChaosPlan, type StatsSnapshot } from './schedule.ts';

/** After leaseMs, this much more: renewals run every third of leaseMs, and the reading itself takes a moment. */
const DRIFT_MARGIN_MS = 1000;

export interface ChaosPhaseInput {
  plan: ChaosPlan;
  stack: ChaosStack;
  /** Every deployment of every pool (the leases to read). */
  deployments: DeploymentRef[];
  /** The gateways' leaseMs: how long after the load the second drift reading waits. */
  leaseMs: number;
  /** The gateways' ADMIN_API_KEY. */
  adminKey: string;
}

export interface ChaosPhase {
  /** After the load (its result must carry the arrivals): the readings, the attribution, the printed report. */
  finish(result: RunResult): Promise<ChaosReport>;
  stop(): Promise<void>;
}

const log = (line: string) => process.stdout.write(`${line}\n`);

/** The time the phase adds after the load: the drift wait and its readings (for the driver's hard cap). */
export const chaosTailMs = (leaseMs: number) => leaseMs + DRIFT_MARGIN_MS + 15_000;

/** Starts the schedule now: call it just before the load starts. */
export function startChaosPhase(input: ChaosPhaseInput): ChaosPhase {
  const { plan, stack, deployments, leaseMs, adminKey } = input;
  log(
    `chaos: ${plan.events.length} events, settle ${(plan.settleMs / 1000).toFixed(1)} s: ${plan.events.map((e) => `${e.name} @${(e.startMs / 1000).toFixed(1)}s`).join(', ')}`,
  );
  const running = runChaos(plan, stackActions(stack), epochMs(), log);
  // A gateway killed and not restarted has no view to read.
  const drift = () =>
    readDrift(
      stack.redis?.url,
      deployments,
      stack.gateways.filter((g) => alive(g.child.process)),
      adminKey,
    );
  return {
    async finish(result) {
      const endAt = epochMs();
      const run = await running.done;
      let finalStats: StatsSnapshot;
      try {
        finalStats = { at: epochMs(), stats: await stack.simulator.stats() };
      } catch {
        finalStats = { at: epochMs(), stats: null };
      }
      const atLoadEnd = await drift();
      log(
        `\nchaos: waiting ${((leaseMs + DRIFT_MARGIN_MS) / 1000).toFixed(0)} s (leaseMs + ${DRIFT_MARGIN_MS} ms) for the in-flight counts to settle…`,
      );
      await sleep(Math.max(0, endAt + leaseMs + DRIFT_MARGIN_MS - epochMs()));
      const afterLeases = await drift();
      const arrivals = result.arrivals ?? [];
      const windows = attribute(run, arrivals, endAt, finalStats);
      const simulatorInFlight = Object.fromEntries(Object.entries(finalStats.stats ?? {}).map(([name, s]) => [name, s.inFlight]));
      const partial: Omit<ChaosReport, 'checks'> = {
        settleMs: plan.settleMs,
        windows,
        arrivals: { reported: result.sent + result.dropped, attributed: windows.reduce((acc, w) => acc + w.arrivals, 0) },
        drift: { leaseMs, atLoadEnd, afterLeases, simulatorInFlight },
        scheduleCompleted: run.completed,
        skipped: run.skipped,
      };
      const report: ChaosReport = { ...partial, checks: chaosChecks(partial) };
      printChaos(report);
      return report;
    },
    stop: () => running.stop(),
  };
}
