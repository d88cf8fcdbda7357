/**
 * The chaos schedule of a scenario (its `chaos` section, validated in lib/scenario.ts) as a plan in
 * milliseconds, and the runner that carries it out beside the load.
 *
 * Each event acts at its start (kill, freeze, fault on) and undoes at its end (restart, thaw, fault
 * off). The simulator's counters are read at every event's start and at the end of its settle time,
 * so what the deployments received during each event's window is the difference. Every time is
 * recorded as it happened (epoch ms), and the report attributes arrivals by those times, not by the
 * plan: an action that took longer shifts the window, never loses an arrival.
 *
 * Bounded: the steps are timers within the load's length, each action has its own time limit
 * (actions.ts), and stop() cancels what is left and undoes what is active (SIGCONT, faults cleared).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { DeploymentStats, Fault } from '../../shared/simulator/types.ts';
import { eventSpan, parseDuration, simDeploymentName, type ChaosSpec, type Scenario } from '../lib/scenario.ts';

export type ChaosAction =
  | { kind: 'redis-kill' }
  | { kind: 'redis-freeze' }
  /** `gateway`: 0-based index into the stack's gateways. */
  | { kind: 'gateway-kill'; gateway: number; restart: boolean }
  | { kind: 'fault'; pool: string; deploymentId: string; simDeployment: string; fault: Fault };

export interface PlannedEvent {
  name: string;
  action: ChaosAction;
  /** From the load's start, after --duration scaling. */
  startMs: number;
  endMs: number;
  /** endMs + the settle time: the end of the event's report window. */
  windowEndMs: number;
}

export interface ChaosPlan {
  settleMs: number;
  events: PlannedEvent[];
  /** The load's length: no event's window may end after it. */
  loadMs: number;
}

/** Epoch milliseconds at sub-millisecond resolution (the load generator stamps its arrivals the same way). */
export const epochMs = (): number => performance.timeOrigin + performance.now();

/**
 * The schedule in ms, scaled by `factor` (the --duration stretch of the stages), as the stages are;
 * `loadMs`: the scaled stages' length.
 */
export function planChaos(scenario: Scenario, factor: number, loadMs: number): ChaosPlan | undefined {
  const chaos: ChaosSpec | undefined = scenario.chaos;
  if (!chaos) return undefined;
  const scale = (ms: number) => Math.round(ms * factor);
  const settleMs = scale(parseDuration(chaos.settle));
  const pools = Object.keys(scenario.local.pools);
  const events = chaos.events.map((event): PlannedEvent => {
    const span = eventSpan(event);
    const startMs = scale(span.startMs);
    const endMs = Math.max(startMs + 1, scale(span.endMs));
    let action: ChaosAction;
    if (event.kind === 'fault') {
      const pool = event.pool ?? pools[0]!;
      action = {
        kind: 'fault',
        pool,
        deploymentId: event.deployment,
        simDeployment: simDeploymentName(pool, event.deployment),
        fault: event.fault,
      };
    } else if (event.kind === 'gateway-kill') action = { kind: 'gateway-kill', gateway: event.gateway - 1, restart: event.restart };
    else action = { kind: event.kind };
    return { name: event.name, action, startMs, endMs, windowEndMs: endMs + settleMs };
  });
  return { settleMs, events, loadMs };
}

/** What the stack must allow for the plan to run; throws with the reason otherwise. */
export function checkPlan(plan: ChaosPlan, stack: { redis: boolean; gateways: number; loadBalancer: boolean }): void {
  for (const event of plan.events) {
    const { action } = event;
    if ((action.kind === 'redis-kill' || action.kind === 'redis-freeze') && !stack.redis)
      throw new Error(`chaos event '${event.name}' needs Redis (not --memory)`);
    if (action.kind === 'gateway-kill') {
      if (action.gateway >= stack.gateways)
        throw new Error(`chaos event '${event.name}' kills gateway-${action.gateway + 1}, but the run has ${stack.gateways}`);
      if (!stack.loadBalancer || stack.gateways < 2)
        throw new Error(`chaos event '${event.name}' kills a gateway: it needs nginx and at least 2 gateways`);
    }
  }
}

/** One line describing an event's action, for the tables and the doc. */
export function describeAction(action: ChaosAction): string {
  switch (action.kind) {
    case 'redis-kill':
      return 'SIGKILL redis-server; a new, empty one on the same port at the end';
    case 'redis-freeze':
      return 'SIGSTOP redis-server (connections open, no answers); SIGCONT at the end';
    case 'gateway-kill':
      return `SIGKILL gateway-${action.gateway + 1}; ${action.restart ? 'restarted on the same port at the end' : 'not restarted'}`;
    case 'fault': {
      const { kind, ...rest } = action.fault;
      const args = Object.entries(rest)
        .map(([key, value]) => `${key} ${String(value)}`)
        .join(', ');
      return `${action.pool}/${action.deploymentId}: ${kind}${args ? ` (${args})` : ''}; cleared at the end`;
    }
  }
}

/** The stack operations a plan needs (actions.ts implements them on the local stack; the test can fake them). */
export interface ChaosActions {
  /** Acts at the event's start; returns notes for the report (e.g. "pid 1234"). */
  apply(event: PlannedEvent): Promise<string[]>;
  /** Undoes at the event's end (restart, thaw, clear); returns notes (e.g. "restarted in 120 ms"). */
  undo(event: PlannedEvent): Promise<string[]>;
  /** On an early way out: undoes whatever is active (a frozen Redis continued, faults cleared), best effort, bounded. */
  abort(): Promise<void>;
  /** The simulator's counters now. */
  simulatorStats(): Promise<Record<string, DeploymentStats>>;
}

/** A simulator reading; `stats` is null when it failed (the windows that need it say so). */
export interface StatsSnapshot {
  at: number;
  stats: Record<string, DeploymentStats> | null;
}

export interface EventRun {
  name: string;
  action: ChaosAction;
  planned: { startMs: number; endMs: number; windowEndMs: number };
  /** Epoch ms, as it happened: just before the action, just before the undo, and the window's end. */
  startedAt: number;
  endedAt: number;
  windowEndAt: number;
  /** Simulator readings at startedAt and windowEndAt. */
  statsAtStart: StatsSnapshot;
  statsAtWindowEnd: StatsSnapshot;
  notes: string[];
  errors: string[];
}

export interface ChaosRun {
  /** Epoch ms of the load's start (the schedule's zero). */
  t0: number;
  statsAtStart: StatsSnapshot;
  events: EventRun[];
  /** Events not run: the schedule ran so late that they would have ended after the load. */
  skipped: string[];
  /** False when stop() cut the schedule short. */
  completed: boolean;
}

export interface RunningChaos {
  /** Resolves when every step has run (or stop() cut it short). */
  done: Promise<ChaosRun>;
  /** Cancels the steps left and undoes what is active. */
  stop(): Promise<void>;
}

const message = (error: unknown) => (error instanceof Error ? error.message : String(error));

/**
 * Runs `plan` from `t0` (epoch ms of the load's start): per event, a simulator reading and the
 * action at its start, the undo at its end, a reading at its window's end. Steps run in order; one
 * that is late (an action that took long) delays the next, and its times are recorded as they were.
 * `log` gets one line per step.
 */
export function runChaos(plan: ChaosPlan, actions: ChaosActions, t0: number, log: (line: string) => void = () => {}): RunningChaos {
  const controller = new AbortController();
  const { signal } = controller;
  const untilOffset = async (offsetMs: number) => {
    const wait = t0 + offsetMs - epochMs();
    if (wait > 0) await sleep(wait, undefined, { signal });
  };
  const read = async (): Promise<StatsSnapshot> => {
    const at = epochMs();
    try {
      return { at, stats: await actions.simulatorStats() };
    } catch (error) {
      log(`  chaos: reading the simulator failed: ${message(error)}`);
      return { at, stats: null };
    }
  };
  const clock = () => `${((epochMs() - t0) / 1000).toFixed(1)}s`;
  const events: EventRun[] = [];
  const skipped: string[] = [];
  let completed = false;

  const elapsed = () => epochMs() - t0;
  const steps = async (): Promise<void> => {
    const statsAtStart = await read();
    run.statsAtStart = statsAtStart;
    /** How late the schedule runs: an undo that took long (a gateway's restart) moves every later step by as much. */
    let shift = 0;
    for (const event of plan.events) {
      if (event.windowEndMs + shift > plan.loadMs) {
        skipped.push(event.name);
        log(`  ${clock()}: chaos ${event.name} skipped: running ${(shift / 1000).toFixed(1)} s late, it would end after the load`);
        continue;
      }
      await untilOffset(event.startMs + shift);
      shift = Math.max(shift, elapsed() - event.startMs);
      const record: EventRun = {
        name: event.name,
        action: event.action,
        planned: { startMs: event.startMs, endMs: event.endMs, windowEndMs: event.windowEndMs },
        startedAt: 0,
        endedAt: 0,
        windowEndAt: 0,
        statsAtStart: await read(),
        statsAtWindowEnd: { at: 0, stats: null },
        notes: [],
        errors: [],
      };
      record.startedAt = record.statsAtStart.at;
      events.push(record);
      try {
        record.notes.push(...(await actions.apply(event)));
      } catch (error) {
        record.errors.push(`start: ${message(error)}`);
      }
      log(`  ${clock()}: chaos ${event.name} started${record.errors.length ? ` (failed: ${record.errors.join('; ')})` : ''}`);
      // The event lasts as long as planned, however late it started.
      shift = Math.max(shift, elapsed() - event.startMs);
      await untilOffset(event.endMs + shift);
      record.endedAt = epochMs();
      try {
        record.notes.push(...(await actions.undo(event)));
      } catch (error) {
        record.errors.push(`end: ${message(error)}`);
      }
      log(`  ${clock()}: chaos ${event.name} ended${record.notes.length ? ` (${record.notes.join('; ')})` : ''}`);
      // The settle time counts from when the undo is done (a restarted gateway is ready).
      shift = Math.max(shift, elapsed() - event.endMs);
      await untilOffset(event.windowEndMs + shift);
      record.statsAtWindowEnd = await read();
      record.windowEndAt = record.statsAtWindowEnd.at;
    }
    completed = true;
  };

  const run: ChaosRun = { t0, statsAtStart: { at: t0, stats: null }, events, skipped, completed: false };
  const done = steps().then(
    () => ({ ...run, completed }),
    (error: unknown) => {
      if (!signal.aborted) log(`  chaos: the schedule failed: ${message(error)}`);
      // An event cut short ends where it was cut.
      const last = events[events.length - 1];
      if (last && last.windowEndAt === 0) {
        const now = epochMs();
        last.endedAt ||= now;
        last.windowEndAt = now;
        last.statsAtWindowEnd = { at: now, stats: null };
      }
      return { ...run, completed: false };
    },
  );
  return {
    done,
    async stop() {
      controller.abort();
      await done;
      await actions.abort();
    },
  };
}
