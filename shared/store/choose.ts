/**
 * In-process twin of the choice rules in lua/acquire.lua: pick one of a tier's eligible deployments
 * (in config order) by strategy, with randomness from the caller. Keep the two in step.
 */
import type { Strategy } from './types.ts';

export interface Candidate {
  inFlight: number;
  weight: number;
}

export interface ChoiceRandomness {
  /** Two numbers in [0, 1). */
  random1: number;
  random2: number;
  /** Next value of the pool's round-robin cursor (1, 2, 3, …). */
  nextCursor: () => number;
}

/** Index in [0, n) from a random number in [0, 1). */
function randomIndex(n: number, random: number): number {
  return Math.min(n - 1, Math.floor(random * n));
}

/** Returns the chosen candidate's index in `candidates`, which must not be empty. */
export function chooseCandidate(strategy: Strategy, candidates: readonly Candidate[], randomness: ChoiceRandomness): number {
  const n = candidates.length;
  const { random1, random2 } = randomness;
  const inFlight = (i: number): number => candidates[i]?.inFlight ?? 0;
  switch (strategy) {
    case 'round-robin':
      return (randomness.nextCursor() - 1) % n;
    case 'random':
      return randomIndex(n, random1);
    case 'power-of-two': {
      if (n === 1) return 0;
      const first = randomIndex(n, random1);
      let second = randomIndex(n - 1, random2);
      if (second >= first) second += 1;
      return inFlight(second) < inFlight(first) ? second : first;
    }
    case 'weighted': {
      const total = candidates.reduce((sum, c) => sum + Math.max(0, c.weight), 0);
      if (total <= 0) return randomIndex(n, random1);
      let point = random1 * total;
      let last = 0;
      for (const [i, c] of candidates.entries()) {
        if (c.weight <= 0) continue;
        last = i;
        point -= c.weight;
        if (point < 0) return i;
      }
      return last;
    }
    case 'least-requests':
    default: {
      let fewest = Infinity;
      let tied: number[] = [];
      for (const [i, c] of candidates.entries()) {
        if (c.inFlight < fewest) {
          fewest = c.inFlight;
          tied = [i];
        } else if (c.inFlight === fewest) {
          tied.push(i);
        }
      }
      return tied[randomIndex(tied.length, random1)] ?? 0;
    }
  }
}
