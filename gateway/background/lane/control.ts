/**
 * The control queue's jobs, about whole batches: `submit` queues a batch's lines, `cancel` takes the
 * lines not started out of the queue, and the cluster-wide `sweep` (a BullMQ job scheduler) expires
 * batches whose completion window ended while lines still waited. Each is a durable job, so work an
 * instance accepted is done even if it dies: another instance's worker takes the job over.
 */
import type { Job } from 'bullmq';
import type { Logger } from '../../logger.ts';
import type { Metrics } from '../../metrics.ts';
import type { BatchInfo, BatchRecords, BatchStatus } from '../contract.ts';
import type { Expiries } from './expiries.ts';
import { priorityOf, type FairOrder } from './fair-order.ts';
import { lineJobId, type ControlJob, type ControlName, type LaneQueues } from './queues.ts';

export interface ControlDeps {
  records: BatchRecords;
  queues: LaneQueues;
  fairOrder: FairOrder;
  expiries: Expiries;
  metrics: Metrics;
  logger: Logger;
}

/** Lines added (or removed) per round trip. */
const CHUNK = 500;
/** Batches one sweep looks at; the rest wait for the next. */
const SWEEP_BATCHES = 50;

/** A submit's progress, kept on its job: a run again after a crash goes on from there with the same tags. */
interface SubmitProgress {
  first: number;
  next: number;
}

/** Nothing left for the lane to do in these. */
const OVER: ReadonlySet<BatchStatus> = new Set(['failed', 'finalizing', 'completed', 'expired', 'cancelled']);

export class Control {
  private readonly deps: ControlDeps;

  constructor(deps: ControlDeps) {
    this.deps = deps;
  }

  async run(job: Job<ControlJob, void, ControlName>): Promise<void> {
    const { batchId } = job.data;
    if (job.name === 'sweep') return this.sweep(Date.now());
    const batch = batchId === undefined ? undefined : await this.deps.records.info(batchId);
    if (!batch) return;
    if (job.name === 'submit') return this.submit(job, batch);
    await this.removeUnstarted(batch, 'cancelled');
  }

  /**
   * Queues every line in chunks, with deterministic job ids (BullMQ adds no job whose id exists) and
   * fair priorities, then marks the batch started. The progress is saved per chunk, so a submit run
   * again after its instance died goes on where it was, with the tags it had.
   */
  private async submit(job: Job<ControlJob, void, ControlName>, batch: BatchInfo): Promise<void> {
    if (batch.status !== 'validating' && batch.status !== 'in_progress') return;
    const queue = this.deps.queues.line(batch.pool);
    const saved = progressOf(job.progress);
    const first = saved?.first ?? (await this.deps.fairOrder.reserve(queue, batch.pool, batch.client, batch.total));
    for (let from = saved?.next ?? 0; from < batch.total; from += CHUNK) {
      const indexes = range(from, Math.min(batch.total, from + CHUNK));
      await queue.addBulk(
        indexes.map((index) => ({
          name: 'line' as const,
          data: { batchId: batch.id, index },
          opts: { jobId: lineJobId(batch.id, index), priority: priorityOf(first + index) },
        })),
      );
      await job.updateProgress({ first, next: from + CHUNK } satisfies SubmitProgress);
    }
    await this.deps.records.started(batch.id);
    this.deps.logger.info('batch queued', {
      batchId: batch.id,
      pool: batch.pool,
      client: batch.client,
      lines: batch.total,
      firstTag: first,
    });
  }

  /** Batches past their window with lines still waiting: those lines are expired (those running finish). */
  private async sweep(now: number): Promise<void> {
    for (const batchId of await this.deps.expiries.due(now, SWEEP_BATCHES)) {
      const batch = await this.deps.records.info(batchId);
      if (!batch || OVER.has(batch.status)) {
        await this.deps.expiries.forget(batchId);
        continue;
      }
      // A batch being cancelled is the cancel's: its lines not started end as cancelled, not expired.
      await this.removeUnstarted(batch, batch.status === 'cancelling' ? 'cancelled' : 'expired');
    }
  }

  /**
   * Takes the batch's lines that are not running out of its pool's queue and skips those without a
   * result. BullMQ removes any job that holds no lock: waiting, delayed, or stalled on a dead instance;
   * a line never queued (a submit not done yet) counts as removed too, and its run, if it comes, finds
   * it settled. Lines running keep going and record their result.
   */
  private async removeUnstarted(batch: BatchInfo, reason: 'cancelled' | 'expired'): Promise<void> {
    const { queues, records, metrics } = this.deps;
    const queue = queues.line(batch.pool);
    const toSkip: number[] = [];
    for (let from = 0; from < batch.total; from += CHUNK) {
      const indexes = range(from, Math.min(batch.total, from + CHUNK));
      const removed = await Promise.all(indexes.map((index) => queue.remove(lineJobId(batch.id, index))));
      const free = indexes.filter((_, i) => removed[i] === 1);
      const settled = await Promise.all(free.map((index) => records.settled(batch.id, index)));
      toSkip.push(...free.filter((_, i) => !settled[i]));
    }
    const { finished } = toSkip.length > 0 ? await records.skip(batch.id, toSkip, reason) : { finished: false };
    if (toSkip.length > 0) metrics.backgroundLines.inc({ pool: batch.pool, outcome: reason }, toSkip.length);
    if (finished) await this.deps.expiries.forget(batch.id);
    this.deps.logger.info(reason === 'cancelled' ? 'batch cancelled' : 'batch expired', {
      batchId: batch.id,
      pool: batch.pool,
      skipped: toSkip.length,
      finished,
    });
  }
}

function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
}

function progressOf(progress: unknown): SubmitProgress | undefined {
  if (!progress || typeof progress !== 'object') return undefined;
  const { first, next } = progress as Partial<SubmitProgress>;
  return typeof first === 'number' && typeof next === 'number' ? { first, next } : undefined;
}
