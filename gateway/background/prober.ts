/**
 * The cluster-wide prober of deployments out of rotation: one BullMQ job scheduler for the whole
 * cluster (every instance upserts the same id, BullMQ keeps one), not a timer per instance. Every
 * instance with background.workers runs a worker on the probe queue, and each scheduled run is one
 * job, taken by exactly one of them; the queue's global concurrency of 1 keeps a run that outlasts
 * the interval from overlapping the next. What a run does is probe-run.ts.
 *
 * An instance killed mid-run leaves its job locked: another instance's stalled-job check puts it
 * back after about PROBE_LOCK_MS, and runs resume (a run repeated is harmless). The interval is
 * bound when the instance starts (background settings need a restart).
 */
import { Queue, Worker, type ConnectionOptions } from 'bullmq';
import type { GatewayConfig, GatewaySettings } from '../../shared/config/schema.ts';
import { within } from '../bounded-wait.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { Pool } from '../pools.ts';
import type { ProbeLog } from './probe-log.ts';
import { runProbes, type ProbeCredentials, type ProbeStore } from './probe-run.ts';

export const PROBE_QUEUE = 'probes';
/** The one scheduler of the cluster. */
const SCHEDULER_ID = 'probe-run';

/** One probe's whole exchange, at most (less when gateway.upstreamTimeoutMs is shorter). */
const PROBE_TIMEOUT_MS = 5000;
/** Probes of one run in flight at once: a cap on the fan-out when many deployments are out. */
const PROBE_PARALLEL = 8;
/** A run's BullMQ lock (renewed while it runs): how late a dead instance's run is taken up again. */
const PROBE_LOCK_MS = 10_000;
/** How long close waits for a run in progress before it stops without it. */
const CLOSE_WAIT_MS = 3000;
/** Runs kept after they fail (a bug, or Redis away), for inspection; finished runs leave at once. */
const FAILED_RUNS_KEPT = 20;
/** Events BullMQ keeps for the queue (nobody reads them). */
const EVENTS_KEPT = 100;

export interface ProberDeps {
  /** BullMQ's connection (maxRetriesPerRequest: null); the worker opens its own blocking one beside it. */
  connection: ConnectionOptions;
  /** BullMQ's key prefix (the lane's: one hash tag on Redis Cluster). */
  prefix: string;
  /** The config in force (live-config.ts): pools and settings are read at each run. */
  config: {
    readonly current: { readonly config: GatewayConfig; readonly settings: GatewaySettings; readonly pools: ReadonlyMap<string, Pool> };
  };
  /** Where deployments' state is read and a probe's result published (the live store). */
  store: ProbeStore;
  credentials: ProbeCredentials;
  metrics: Metrics;
  logger: Logger;
  /** Where each run's results are kept for every instance to show (the status page); absent: nowhere. */
  log?: ProbeLog;
  /** Overrides background.probeIntervalMs (tests). */
  intervalMs?: number;
  /** Overrides the probe timeout (tests). */
  timeoutMs?: number;
}

export interface Prober {
  /** Resolves once the scheduler is in Redis (it waits for a Redis that is away); never rejects. */
  readonly ready: Promise<void>;
  /** Stops this instance's worker (a run in progress gets CLOSE_WAIT_MS) and its queue; the scheduler stays for the others. */
  close(): Promise<void>;
}

export function startProber(deps: ProberDeps): Prober {
  const { connection, prefix, config, logger } = deps;
  const intervalMs = deps.intervalMs ?? config.current.config.background.probeIntervalMs;
  const queue = new Queue(PROBE_QUEUE, { connection, prefix, streams: { events: { maxLen: EVENTS_KEPT } } });
  const ready = (async () => {
    await queue.setGlobalConcurrency(1);
    await queue.upsertJobScheduler(
      SCHEDULER_ID,
      { every: intervalMs },
      { name: 'probe', opts: { removeOnComplete: true, removeOnFail: { count: FAILED_RUNS_KEPT } } },
    );
  })().catch((error: Error) => void logger.error('prober: the scheduler could not be set', { error: error.message }));

  const worker = new Worker(
    PROBE_QUEUE,
    async () => {
      const { settings, pools } = config.current;
      const reports = await runProbes({
        pools: () => pools.values(),
        settings,
        store: deps.store,
        credentials: deps.credentials,
        metrics: deps.metrics,
        logger,
        timeoutMs: deps.timeoutMs ?? Math.min(PROBE_TIMEOUT_MS, settings.upstreamTimeoutMs),
        parallel: PROBE_PARALLEL,
      });
      await deps.log
        ?.record(reports)
        .catch((error: Error) => logger.warn('prober: could not keep the results for the status page', { error: error.message }));
    },
    {
      connection,
      prefix,
      concurrency: 1,
      lockDuration: PROBE_LOCK_MS,
      stalledInterval: PROBE_LOCK_MS,
      // A run that stalled (its instance died) is run again, however often: it only probes.
      maxStalledCount: 1_000_000,
    },
  );
  worker.on('error', (error) => logger.warn('prober worker error', { error: error.message }));
  worker.on('failed', (_job, error) => logger.error('probe run failed', { error: error.message }));

  let closing: Promise<void> | undefined;
  return {
    ready,
    close() {
      closing ??= (async () => {
        const closed = worker.close();
        const waited = await within(
          closed.then(() => true),
          CLOSE_WAIT_MS,
        );
        if (!waited) await worker.close(true).catch(() => undefined);
        await within(queue.close(), CLOSE_WAIT_MS);
      })();
      return closing;
    },
  };
}
