/**
 * Slow start: a deployment back from an open circuit or a long cooldown gets a growing share of new
 * requests, from SLOW_START_INITIAL_SHARE to all of them over the pool's slowStartMs (as Envoy's slow
 * start). Same rule as the slow-start block of lua/acquire.lua.
 */
import { SLOW_START_MEMORY_MS, wholeMs } from './constants.ts';

/** The share of a deployment whose slow start has just begun. */
export const SLOW_START_INITIAL_SHARE = 0.1;

/** The pool's slow start as the store applies it: whole ms, at most SLOW_START_MEMORY_MS; 0 is off. */
export function slowStartLength(slowStartMs: number | undefined): number {
  return Math.min(SLOW_START_MEMORY_MS, wholeMs(slowStartMs ?? 0));
}

/** Its share in (0, 1) while slow-starting (since ≤ now < since + slowStartMs); undefined otherwise. */
export function slowStartShare(since: number, nowMs: number, slowStartMs: number): number | undefined {
  const elapsed = nowMs - since;
  if (since <= 0 || slowStartMs <= 0 || elapsed < 0 || elapsed >= slowStartMs) return undefined;
  return SLOW_START_INITIAL_SHARE + ((1 - SLOW_START_INITIAL_SHARE) * elapsed) / slowStartMs;
}

/**
 * The candidates that stay in the choice: each slow-starting one with probability its share, when at
 * least one candidate is not slow-starting; all of them otherwise (nothing else could serve).
 */
export function keepSlowStarting<T>(candidates: readonly T[], shareOf: (c: T) => number | undefined, random: () => number): T[] {
  const shares = candidates.map(shareOf);
  if (candidates.length < 2 || shares.every((share) => share !== undefined)) return [...candidates];
  return candidates.filter((_, i) => {
    const share = shares[i];
    return share === undefined || random() < share;
  });
}

/** When the deployment's slow start began, as snapshots report it: 0 once it is no longer remembered. */
export function rememberedSlowStart(since: number, nowMs: number): number {
  return since > 0 && nowMs < since + SLOW_START_MEMORY_MS ? since : 0;
}
