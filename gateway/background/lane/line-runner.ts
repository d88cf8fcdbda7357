/**
 * Runs one line job: checks that the line is still to run (batch known, not settled, not cancelled,
 * within its completion window), sends it through this instance's listener (loopback.ts), and acts on
 * what the answer means (verdict.ts): record it, pause the pool's lane, delay the line, or try again.
 *
 * A line runs to success at most once and its result is never lost: the result is recorded before the
 * job completes, the records keep a line's first result only, and a line whose instance died holds a
 * BullMQ lock that expires (background.lockMs), after which another instance's stalled-job check puts
 * it back in the queue; run again, it finds its result if there is one (`settled`) and ends.
 */
import { DelayedError, Worker, type Job, type Queue } from 'bullmq';
import type { Logger } from '../../logger.ts';
import type { Metrics } from '../../metrics.ts';
import type { BatchInfo, BatchRecords, LineOutcome } from '../contract.ts';
import type { Expiries } from './expiries.ts';
import type { Loopback } from './loopback.ts';
import type { LineJob } from './queues.ts';
import { backoffMs, verdictOf, type Verdict } from './verdict.ts';

/** Where the lane is in its life, for a line running now. */
export interface LaneState {
  /** True once the lane is closing: a line without an answer then goes back to the queue, uncounted. */
  readonly closing: boolean;
  /** Aborted when the shutdown grace is over: lines still running are cut. */
  readonly cut: AbortSignal;
}

export interface LineRunnerDeps {
  records: BatchRecords;
  expiries: Expiries;
  /** The lane's mark and the batch's client, as request headers (http/auth.ts LaneMarker). */
  laneHeaders(client: string): Record<string, string>;
  /** Tries of a line that fails (upstream 429, 5xx, no answer) before its last answer is its result. */
  lineAttempts: number;
  /** The whole loopback exchange of one line (the gateway's deadline and a margin). */
  timeoutMs: number;
  metrics: Metrics;
  logger: Logger;
}

/** The x-request-id of a line's run: batch, line and run, so the logs and Azure's records tell them apart. */
export function laneRequestId(batchId: string, index: number, run: number): string {
  const batch = batchId.startsWith('batch_') ? batchId : `batch_${batchId}`;
  return `${batch}_${index}_${run}`;
}

export class LineRunner {
  private readonly deps: LineRunnerDeps;

  constructor(deps: LineRunnerDeps) {
    this.deps = deps;
  }

  /** `queue`: the line's pool queue (a pool without room pauses it whole). `loopback`: this instance's listener. */
  async run(job: Job<LineJob>, token: string | undefined, queue: Queue, loopback: Loopback, lane: LaneState): Promise<void> {
    const { records } = this.deps;
    const { batchId, index } = job.data;
    const batch = await records.info(batchId);
    // Past retention, or a line whose result is in already (a run again after a crash): nothing to do.
    if (!batch || (await records.settled(batchId, index))) return;
    if (batch.status === 'cancelling' || batch.status === 'cancelled') return this.skip(batch, index, 'cancelled');
    if (Date.now() >= batch.expiresAt) return this.skip(batch, index, 'expired');
    const line = await records.line(batchId, index);
    if (!line)
      return void (await this.record(batch, index, { kind: 'error', code: 'line_missing', message: 'The input line was not found.' }));

    const answer = await loopback.send({
      endpoint: batch.endpoint,
      body: line.body,
      requestId: laneRequestId(batchId, index, job.attemptsStarted),
      headers: this.deps.laneHeaders(batch.client),
      timeoutMs: this.deps.timeoutMs,
      signal: lane.cut,
    });
    // Cut by the shutdown (the lane's grace, or the listener's that ends at the same moment), or sent as
    // the listener closed: not the line's failure. Back to the queue, not a try.
    if (answer.kind === 'no-answer' && lane.closing) {
      await job.moveToWait(token);
      throw new DelayedError('the instance is shutting down');
    }
    await this.act(verdictOf(answer), job, token, queue, batch);
  }

  private async act(verdict: Verdict, job: Job<LineJob>, token: string | undefined, queue: Queue, batch: BatchInfo): Promise<void> {
    const { metrics } = this.deps;
    const pool = batch.pool;
    switch (verdict.kind) {
      case 'record':
        return void (await this.record(batch, job.data.index, verdict.outcome));
      case 'pool-wait':
        // The pool has no room above its reserve: every worker of this pool waits, cluster-wide (the
        // limiter key is the queue's), and the line goes back uncounted (BullMQ's manual rate limit).
        metrics.backgroundThrottles.inc({ pool, reason: 'pool-full' });
        await queue.rateLimit(verdict.waitMs);
        throw Worker.RateLimitError();
      case 'line-wait':
        metrics.backgroundThrottles.inc({ pool, reason: 'client-quota' });
        await job.moveToDelayed(Date.now() + verdict.waitMs, token);
        throw new DelayedError('the client is at its quota');
      case 'retry': {
        // Azure's 429 is waited out, not counted: a line must not fail for being throttled (its window bounds it).
        const throttled = verdict.reason === 'upstream-429';
        if (throttled) metrics.backgroundThrottles.inc({ pool, reason: 'upstream' });
        const tries = (job.data.tries ?? 0) + (throttled ? 0 : 1);
        if (tries >= this.deps.lineAttempts) return void (await this.record(batch, job.data.index, verdict.last));
        await job.updateData({ ...job.data, tries });
        await job.moveToDelayed(Date.now() + (verdict.waitMs ?? backoffMs(tries)), token);
        throw new DelayedError(`try ${tries} failed (${verdict.reason})`);
      }
    }
  }

  private async record(batch: BatchInfo, index: number, outcome: LineOutcome): Promise<void> {
    const { recorded, finished } = await this.deps.records.record(batch.id, index, outcome);
    if (recorded) {
      const succeeded = outcome.kind === 'response' && outcome.statusCode >= 200 && outcome.statusCode < 300;
      this.deps.metrics.backgroundLines.inc({ pool: batch.pool, outcome: succeeded ? 'succeeded' : 'failed' });
    }
    if (finished) await this.finished(batch);
  }

  private async skip(batch: BatchInfo, index: number, reason: 'cancelled' | 'expired'): Promise<void> {
    const { finished } = await this.deps.records.skip(batch.id, [index], reason);
    this.deps.metrics.backgroundLines.inc({ pool: batch.pool, outcome: reason });
    if (finished) await this.finished(batch);
  }

  private async finished(batch: BatchInfo): Promise<void> {
    await this.deps.expiries.forget(batch.id);
    this.deps.logger.info('batch finished', { batchId: batch.id, pool: batch.pool, client: batch.client, lines: batch.total });
  }
}
