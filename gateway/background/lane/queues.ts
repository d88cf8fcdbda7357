/**
 * The lane's BullMQ queues: one per pool for its lines (so a pool without room pauses alone, and each
 * pool has its own cluster-wide concurrency), and one control queue for the work about whole batches
 * (submit, cancel, the expiry sweep). Names, job ids and options live here; what runs the jobs is
 * line-runner.ts and control.ts.
 */
import { Queue, type ConnectionOptions, type JobsOptions } from 'bullmq';

/** A line job: which line of which batch. Everything else is read from the records when it runs. */
export interface LineJob {
  batchId: string;
  index: number;
  /** Tries that ended in an upstream 429, a 5xx or no answer (background.lineAttempts bounds them). */
  tries?: number;
}

/** A control job: a batch to submit, cancel, or (no batch) the expiry sweep. */
export interface ControlJob {
  batchId?: string;
}

export type ControlName = 'submit' | 'cancel' | 'sweep';

export const CONTROL_QUEUE = 'control';

/** The queue of a pool's lines (pool names are letters, digits, '.', '_', '-': valid in a BullMQ name). */
export function lineQueueName(pool: string): string {
  return `lines.${pool}`;
}

/** Deterministic, so a submit run again after a crash adds no line twice. BullMQ ids may not contain ':'. */
export function lineJobId(batchId: string, index: number): string {
  return `${batchId}-${index}`;
}

export function controlJobId(name: Exclude<ControlName, 'sweep'>, batchId: string): string {
  return `${name}-${batchId}`;
}

/**
 * Line jobs leave Redis as soon as they end: the result is in the records, and a line added again
 * later (a submit run again) finds it settled and ends at once. They never fail in BullMQ's sense
 * (an answer or an error is recorded instead), except by a bug: then BullMQ tries a few times more.
 */
export const LINE_JOB_OPTIONS: JobsOptions = {
  removeOnComplete: true,
  removeOnFail: { age: 24 * 60 * 60 },
  attempts: 5,
  backoff: { type: 'exponential', delay: 1000 },
};

export const CONTROL_JOB_OPTIONS: JobsOptions = {
  removeOnComplete: true,
  removeOnFail: { age: 24 * 60 * 60 },
  attempts: 20,
  backoff: { type: 'exponential', delay: 1000 },
};

/** Events BullMQ keeps per queue (nobody here reads them): bounded well below its default 10 000. */
const EVENTS_KEPT = 1000;

export interface QueueConnection {
  connection: ConnectionOptions;
  /** BullMQ's key prefix: the lane's keys and nothing else under it. */
  prefix: string;
}

/** The lane's queues, made on first use and kept: the control queue and one per pool seen. */
export class LaneQueues {
  readonly control: Queue<ControlJob, void, ControlName>;
  private readonly lines = new Map<string, Queue<LineJob, void, 'line'>>();
  private readonly options: QueueConnection;

  constructor(options: QueueConnection) {
    this.options = options;
    this.control = new Queue(CONTROL_QUEUE, this.queueOptions(CONTROL_JOB_OPTIONS));
  }

  /** The pool's line queue. */
  line(pool: string): Queue<LineJob, void, 'line'> {
    let queue = this.lines.get(pool);
    if (!queue) {
      queue = new Queue(lineQueueName(pool), this.queueOptions(LINE_JOB_OPTIONS));
      this.lines.set(pool, queue);
    }
    return queue;
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.control.close(), ...[...this.lines.values()].map((queue) => queue.close())]);
  }

  private queueOptions(defaultJobOptions: JobsOptions) {
    return {
      connection: this.options.connection,
      prefix: this.options.prefix,
      defaultJobOptions,
      streams: { events: { maxLen: EVENTS_KEPT } },
    };
  }
}
