/**
 * The open model's arrivals, for every tool that sends on a schedule: when each arrival is due
 * (an ArrivalSchedule), and the timer loop that sends them on time (dispatchArrivals).
 *
 * Rates come in stages, k6's way: each stage lasts `durationMs` and ends at `target` requests/s.
 * Spacing:
 *   ramp     the rate moves linearly from the previous stage's target (or startRate) to this one's,
 *            and arrival k is due when the integral of the rate reaches k (deterministic; the load
 *            generator, driver.ts and bench.ts);
 *   even     each stage on its own, at its constant `target`, from the stage's start: evenly spaced;
 *   poisson  the same with exponential gaps, drawn from prng(seed) (admission-bench.ts).
 * The same plan gives the same arrivals, to the bit: runs compare across targets and commits.
 */
import { prng } from './random.ts';

export interface RateStage {
  durationMs: number;
  /** Requests per second at the stage's end (ramp), or throughout it (even, poisson). */
  target: number;
}

export type ArrivalPlan =
  | { spacing: 'ramp'; startRate: number; stages: RateStage[] }
  | { spacing: 'even'; stages: RateStage[]; maxArrivals?: number }
  | { spacing: 'poisson'; stages: RateStage[]; seed: number; maxArrivals?: number };

export interface ArrivalSchedule {
  /** Arrivals in the schedule. */
  readonly count: number;
  /** End of the last stage, ms from the start. */
  readonly endMs: number;
  /** When arrival k (0-based, < count) is due, ms from the start; non-decreasing in k. */
  at(k: number): number;
}

export function arrivalSchedule(plan: ArrivalPlan): ArrivalSchedule {
  return plan.spacing === 'ramp' ? new RampSchedule(plan.startRate, plan.stages) : stepSchedule(plan);
}

/** Arrival k is when the integral of the piecewise-linear rate reaches k. */
class RampSchedule implements ArrivalSchedule {
  private readonly segments: { startMs: number; durationMs: number; from: number; to: number; before: number; area: number }[] = [];
  readonly count: number;
  readonly endMs: number;

  constructor(startRate: number, stages: RateStage[]) {
    let startMs = 0;
    let before = 0;
    let from = startRate;
    for (const stage of stages) {
      const area = ((from + stage.target) / 2) * (stage.durationMs / 1000);
      this.segments.push({ startMs, durationMs: stage.durationMs, from, to: stage.target, before, area });
      startMs += stage.durationMs;
      before += area;
      from = stage.target;
    }
    this.count = Math.floor(before + 1e-9);
    this.endMs = startMs;
  }

  at(k: number): number {
    for (const segment of this.segments) {
      if (k >= segment.before + segment.area || segment.area === 0) continue;
      const need = k - segment.before;
      const seconds = segment.durationMs / 1000;
      const slope = (segment.to - segment.from) / seconds;
      // from·s + slope·s²/2 = need
      const s =
        Math.abs(slope) < 1e-12 ? need / segment.from : (-segment.from + Math.sqrt(segment.from * segment.from + 2 * slope * need)) / slope;
      return segment.startMs + Math.min(seconds, Math.max(0, s)) * 1000;
    }
    return this.endMs;
  }
}

/** Each stage at its constant rate from its own start, evenly spaced or Poisson; at most maxArrivals in all. */
function stepSchedule(plan: Extract<ArrivalPlan, { spacing: 'even' | 'poisson' }>): ArrivalSchedule {
  const random = prng(plan.spacing === 'poisson' ? plan.seed : 0);
  const gap = (perSecond: number) => (plan.spacing === 'even' ? 1000 / perSecond : (-Math.log(1 - random()) * 1000) / perSecond);
  const max = plan.maxArrivals ?? Number.POSITIVE_INFINITY;
  const offsets: number[] = [];
  let startMs = 0;
  for (const stage of plan.stages) {
    const endMs = startMs + stage.durationMs;
    // A Poisson stage draws its first gap even when it has no room left: the draws stay in step.
    let at = startMs + (plan.spacing === 'even' ? 0 : gap(stage.target));
    while (at < endMs && offsets.length < max) {
      offsets.push(at);
      at += gap(stage.target);
    }
    startMs = endMs;
  }
  return { count: offsets.length, endMs: startMs, at: (k) => offsets[k]! };
}

/**
 * Sends `schedule` from `t0` (performance.now() of its start): `onArrival(k, due, now)` runs for
 * each arrival once it is due, in order, and returns false to end the schedule there (a request
 * cap); `onTick(now)` after each batch. Resolves at the schedule's end (the stages' full length,
 * so that rates compare across runs), or at once when onArrival ended it.
 */
export function dispatchArrivals(
  schedule: ArrivalSchedule,
  t0: number,
  onArrival: (k: number, due: number, now: number) => boolean,
  onTick?: (now: number) => void,
): Promise<{ stopped: boolean }> {
  return new Promise((resolve) => {
    let k = 0;
    let stopped = false;
    const tick = () => {
      const now = performance.now() - t0;
      while (k < schedule.count) {
        const due = schedule.at(k);
        if (due > now) break;
        if (!onArrival(k, due, now)) {
          stopped = true;
          break;
        }
        k += 1;
      }
      onTick?.(now);
      if (k >= schedule.count || stopped) {
        const rest = stopped ? 0 : schedule.endMs - (performance.now() - t0);
        setTimeout(() => resolve({ stopped }), Math.max(0, rest));
        return;
      }
      setTimeout(tick, Math.max(0, schedule.at(k) - (performance.now() - t0)));
    };
    tick();
  });
}
