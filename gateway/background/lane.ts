/**
 * The background lane: Batch API lines run by BullMQ workers in every instance, on the pools' idle
 * capacity. Each line is an ordinary request to this instance's own listener marked as background
 * (lane/loopback.ts), so the gateway admits it only above the pool's reserve, never ahead of a waiting
 * interactive request, and with the batch's client's quota. This file composes the parts:
 * lane/queues.ts (one queue per pool, one control queue), lane/fair-order.ts (which line next),
 * lane/line-runner.ts (one line), lane/control.ts (submit, cancel, expiry sweep).
 *
 * Workers: per pool, `background.concurrency` lines at once in this instance and
 * `background.poolConcurrency` in the whole cluster (BullMQ global concurrency). Locks of
 * `background.lockMs`, renewed while a line runs; a line whose instance died is put back by another
 * instance's stalled-job check, however often that happens (maxStalledCount is high: a crash never
 * fails a line).
 */
import { Worker, type Job } from 'bullmq';
import type { Cluster, Redis } from 'ioredis';
import type { BackgroundSettings } from '../../shared/config/schema.ts';
import type { Logger } from '../logger.ts';
import type { LaneDepth, Metrics } from '../metrics.ts';
import type { BatchInfo, BatchLane, BatchRecords } from './contract.ts';
import { Control } from './lane/control.ts';
import { Expiries } from './lane/expiries.ts';
import { FairOrder } from './lane/fair-order.ts';
import { LineRunner, type LaneState } from './lane/line-runner.ts';
import { Loopback } from './lane/loopback.ts';
import { CONTROL_QUEUE, controlJobId, LaneQueues, lineQueueName, type ControlJob, type ControlName, type LineJob } from './lane/queues.ts';
import { within } from '../bounded-wait.ts';

export interface LaneOptions {
  /** BullMQ's connection (maxRetriesPerRequest: null); each worker opens its own blocking one beside it. */
  connection: Redis | Cluster;
  /** Prefix of every key of the lane (BullMQ's and its own). */
  prefix: string;
  records: BatchRecords;
  settings: BackgroundSettings;
  /** The pools whose lines run (background.enabled), read when the workers start and at each `syncPools`. */
  pools: () => Iterable<string>;
  /** The lane's mark and the batch's client, as request headers (http/auth.ts LaneMarker). */
  laneHeaders(client: string): Record<string, string>;
  /** The whole loopback exchange of one line (the gateway's deadline and a margin). */
  lineTimeoutMs: number;
  metrics: Metrics;
  logger: Logger;
  /** How often the cluster-wide expiry sweep runs. Default SWEEP_EVERY_MS. */
  sweepEveryMs?: number;
}

/** The expiry sweep's default interval: a window of 24 h ends at most this late for lines that never ran. */
const SWEEP_EVERY_MS = 30_000;
/** Control jobs one instance runs at once: a long submit does not hold up a cancel. */
const CONTROL_CONCURRENCY = 4;
/** Recovered from stalls this often before BullMQ would fail a job: never, in practice. */
const MAX_STALLED = 1_000_000;
/** The manual rate limit (a pool without room) takes effect only under a limiter: one that never limits by itself. */
const UNLIMITED = { max: 1_000_000_000, duration: 1000 };
/** How long the lane's close waits for its workers after the cut lines were sent back. */
const SETTLE_MS = 3000;

export class Lane implements BatchLane {
  private readonly options: LaneOptions;
  private readonly queues: LaneQueues;
  private readonly expiries: Expiries;
  private readonly runner: LineRunner;
  private readonly control: Control;
  private readonly workers = new Map<string, Worker>();
  private loopback: Loopback | undefined;
  /** Aborted when the shutdown grace ends: lines still running are cut and go back to the queue. */
  private readonly cut = new AbortController();
  private closing: Promise<void> | undefined;
  private starting: Promise<void> | undefined;
  /** What a running line reads of the lane's life (line-runner.ts). */
  private readonly state: { closing: boolean } & LaneState = { closing: false, cut: this.cut.signal };

  constructor(options: LaneOptions) {
    this.options = options;
    const { connection, prefix, records, metrics, logger } = options;
    this.queues = new LaneQueues({ connection, prefix });
    this.expiries = new Expiries(connection, prefix);
    const fairOrder = new FairOrder(connection, prefix);
    this.runner = new LineRunner({
      records,
      expiries: this.expiries,
      laneHeaders: options.laneHeaders,
      lineAttempts: options.settings.lineAttempts,
      timeoutMs: options.lineTimeoutMs,
      metrics,
      logger,
    });
    this.control = new Control({ records, queues: this.queues, fairOrder, expiries: this.expiries, metrics, logger });
    metrics.laneDepth = () => this.depths();
  }

  /** Durable once resolved: the submit is a job in Redis that any instance's control worker runs. */
  async submit(batch: BatchInfo): Promise<void> {
    await this.expiries.add(batch.id, batch.expiresAt);
    await this.queues.control.add('submit', { batchId: batch.id }, { jobId: controlJobId('submit', batch.id) });
  }

  async cancel(batchId: string): Promise<void> {
    await this.queues.control.add('cancel', { batchId }, { jobId: controlJobId('cancel', batchId) });
  }

  /**
   * Starts this instance's workers (background.workers), sending lines to the listener at `url` (the
   * address it bound). Without workers the instance still takes submits and cancels.
   */
  start(url: string): Promise<void> {
    this.starting ??= this.startWorkers(url);
    return this.starting;
  }

  private async startWorkers(url: string): Promise<void> {
    const { settings } = this.options;
    if (!settings.workers || this.closing) return;
    const pools = [...this.options.pools()];
    this.loopback = new Loopback(url, settings.concurrency * Math.max(1, pools.length));
    // One scheduler for the whole cluster: every instance upserts the same id, BullMQ keeps one.
    await this.queues.control.upsertJobScheduler('sweep', { every: this.options.sweepEveryMs ?? SWEEP_EVERY_MS }, { name: 'sweep' });
    // Closed while the scheduler was being set (an instance stopped as it started): no worker after the close.
    if (this.closing) return;
    this.workers.set(
      CONTROL_QUEUE,
      this.worker(CONTROL_QUEUE, CONTROL_CONCURRENCY, (job) => this.control.run(job as Job<ControlJob, void, ControlName>)),
    );
    await this.syncPools();
  }

  /** Starts workers for pools that have none yet (at start, and after a config reload added pools). */
  async syncPools(): Promise<void> {
    const { settings } = this.options;
    const loopback = this.loopback;
    if (!loopback || this.closing) return;
    for (const pool of this.options.pools()) {
      if (this.closing) return;
      if (this.workers.has(pool)) continue;
      const queue = this.queues.line(pool);
      this.workers.set(
        pool,
        this.worker(lineQueueName(pool), settings.concurrency, (job, token) =>
          this.runner.run(job as Job<LineJob>, token, queue, loopback, this.state),
        ),
      );
      await queue.setGlobalConcurrency(settings.poolConcurrency);
    }
  }

  /**
   * Stops taking lines at once; lines running get until `graceMs` from now to finish, then are cut and
   * go back to the queue (not counted as a try). Resolves when the workers and queues are closed (the
   * connection is the caller's). Called again, the same close.
   */
  close(graceMs: number): Promise<void> {
    this.closing ??= (async () => {
      this.state.closing = true;
      // A start under way finishes first (it adds no worker once closing), so every worker it made is closed.
      if (this.starting)
        await within(
          this.starting.catch(() => undefined),
          SETTLE_MS,
        );
      const workers = [...this.workers.values()];
      const closed = Promise.allSettled(workers.map((worker) => worker.close()));
      const cut = setTimeout(() => this.cut.abort(), Math.max(0, graceMs));
      // Bounded even if a worker hangs (a Redis that does not answer): the grace, then SETTLE_MS.
      await within(closed, Math.max(0, graceMs) + SETTLE_MS);
      clearTimeout(cut);
      this.cut.abort();
      this.loopback?.close();
      await within(this.queues.close(), SETTLE_MS);
      if (this.options.metrics.laneDepth) this.options.metrics.laneDepth = undefined;
    })();
    return this.closing;
  }

  private worker(queue: string, concurrency: number, processor: (job: Job, token: string | undefined) => Promise<void>): Worker {
    const { connection, prefix, settings, logger } = this.options;
    const worker = new Worker(queue, processor, {
      connection,
      prefix,
      concurrency,
      lockDuration: settings.lockMs,
      // A dead instance's lines are back in the queue within about lockMs + stalledInterval.
      stalledInterval: Math.min(settings.lockMs, 30_000),
      maxStalledCount: MAX_STALLED,
      limiter: UNLIMITED,
      // A line a pool's pause sends back (RateLimitError) returns to the queue without waking a worker
      // that blocks waiting for one (BullMQ 6.7 adds no marker for a prioritized job moved back): such a
      // worker looks again after drainDelay at the latest, so 1 s rather than BullMQ's 5 s.
      drainDelay: 1,
    });
    worker.on('error', (error) => logger.warn('background lane worker error', { queue, error: error.message }));
    worker.on('failed', (job, error) => void this.failed(job, error));
    return worker;
  }

  /** A job that threw (a bug, or Redis away) and ran out of BullMQ's own tries: the line's result is that error. */
  private async failed(job: Job | undefined, error: Error): Promise<void> {
    const { logger, records } = this.options;
    logger.error('background lane job failed', { queue: job?.queueName, job: job?.id, error: error.message });
    if (!job || job.attemptsMade < (job.opts.attempts ?? 1) || !('index' in (job.data as object))) return;
    const { batchId, index } = job.data as LineJob;
    await records
      .record(batchId, index, { kind: 'error', code: 'internal_error', message: 'The gateway failed to run this line.' })
      .then(async ({ finished }) => {
        if (finished) await this.expiries.forget(batchId);
      })
      .catch((recordError: Error) => logger.error('could not record a failed line', { batchId, index, error: recordError.message }));
  }

  /**
   * The queue depth per pool and state for the scrape (the pools whose lines run: every instance reports
   * the same figures); a pool whose counts do not come in time is left out.
   */
  /** Lines of each pool's queue by state, cluster-wide; a pool whose reading takes over SCRAPE_BUDGET_MS is left out. */
  async depths(): Promise<LaneDepth[]> {
    const readings = [...this.options.pools()].map(async (pool): Promise<LaneDepth[]> => {
      const counts = await this.queues.line(pool).getJobCounts('waiting', 'prioritized', 'delayed', 'active');
      return [
        { pool, state: 'waiting', lines: (counts.waiting ?? 0) + (counts.prioritized ?? 0) },
        { pool, state: 'delayed', lines: counts.delayed ?? 0 },
        { pool, state: 'active', lines: counts.active ?? 0 },
      ];
    });
    const settled = await Promise.all(
      readings.map((reading) =>
        within(
          reading.catch(() => undefined),
          SCRAPE_BUDGET_MS,
        ),
      ),
    );
    return settled.flatMap((depths) => depths ?? []);
  }
}

/** What the scrape waits for the queue counts (well inside Prometheus' timeout). */
const SCRAPE_BUDGET_MS = 500;
