/**
 * Per-deployment counters. Every received request ends in exactly one outcome, so
 * received = served + throttled + failed + aborted + inFlight holds at all times.
 */
import type { DeploymentStats, RecordedRequest } from './types.ts';

export type Outcome = 'served' | 'throttled' | 'failed' | 'aborted';

const RECENT_REQUESTS_KEPT = 50;

export class StatsCounter {
  private counters: DeploymentStats = emptyStats();
  private readonly recent: RecordedRequest[] = [];

  begin(record: RecordedRequest): void {
    const counters = this.counters;
    counters.received++;
    counters.inFlight++;
    if (counters.inFlight > counters.peakConcurrency) counters.peakConcurrency = counters.inFlight;
    this.recent.push(record);
    if (this.recent.length > RECENT_REQUESTS_KEPT) this.recent.shift();
  }

  /** `tokens` only for served responses: usage's prompt and completion tokens. */
  end(outcome: Outcome, promptTokens = 0, completionTokens = 0): void {
    const counters = this.counters;
    counters.inFlight--;
    counters[outcome]++;
    if (outcome === 'served') {
      counters.promptTokens += promptTokens;
      counters.completionTokens += completionTokens;
    }
  }

  /** Tokens of a response served earlier that finished generating later (background responses). */
  addTokens(promptTokens: number, completionTokens: number): void {
    this.counters.promptTokens += promptTokens;
    this.counters.completionTokens += completionTokens;
  }

  snapshot(): DeploymentStats {
    return { ...this.counters };
  }

  recentRequests(): RecordedRequest[] {
    return this.recent.map((record) => ({ ...record }));
  }

  /** Zero the counters. Requests still in flight carry over as received, keeping the sum exact. */
  reset(): void {
    const inFlight = this.counters.inFlight;
    this.counters = { ...emptyStats(), received: inFlight, inFlight, peakConcurrency: inFlight };
  }

  clearRecentRequests(): void {
    this.recent.length = 0;
  }
}

function emptyStats(): DeploymentStats {
  return {
    received: 0,
    served: 0,
    throttled: 0,
    failed: 0,
    aborted: 0,
    promptTokens: 0,
    completionTokens: 0,
    inFlight: 0,
    peakConcurrency: 0,
  };
}
