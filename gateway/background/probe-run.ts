/**
 * One run of the cluster-wide prober (prober.ts schedules it): every pool of the config in force is
 * read from the store, and each deployment out of rotation for long is probed (probe-request.ts):
 * an open or half-open circuit, or a cooldown with at least gateway.longCooldownMs left (a quota
 * exhaustion is one). Never a drained deployment (an operator took it out), never a pool with
 * `probe: off`. Probes go out in parallel, a few at a time.
 *
 * A probe that passes brings the deployment back for every instance at once, by slow start: its
 * circuit closes and its cooldown ends (Store.reset with slowStart). A 429 sets the cooldown from its
 * retry time (the store never shortens one). Anything else leaves the deployment as it is: the next
 * run probes it again, and the circuit's own half-open probe still comes when it is due.
 */
import { randomUUID } from 'node:crypto';
import type { GatewaySettings } from '../../shared/config/schema.ts';
import type { DeploymentSnapshot, PoolLayout, SlowStartOption } from '../../shared/store/types.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { Deployment, Pool } from '../pools.ts';
import type { UpstreamAuth } from '../upstream/headers.ts';
import { PROBE_REQUEST_ID_PREFIX, sendProbe, type ProbeAnswer, type ProbeKind } from './probe-request.ts';

/** What a run reads and changes in the store (the live store in the gateway). */
export interface ProbeStore {
  snapshot(pool: PoolLayout): Promise<DeploymentSnapshot[]>;
  reset(pool: string, deploymentId: string, options?: SlowStartOption): Promise<void>;
  cooldown(pool: string, deploymentId: string, durationMs: number, options?: SlowStartOption): Promise<number>;
}

/** The deployments' upstream credentials (upstream/credentials.ts UpstreamCredentials). */
export interface ProbeCredentials {
  forAttempt(deployment: Deployment, maxWaitMs: number): UpstreamAuth | undefined | Promise<UpstreamAuth | undefined>;
}

export interface ProbeRunOptions {
  /** The pools in force now. */
  pools: () => Iterable<Pool>;
  /** The gateway settings in force (longCooldownMs, defaultCooldownMs). */
  settings: GatewaySettings;
  store: ProbeStore;
  credentials: ProbeCredentials;
  metrics: Metrics;
  logger: Logger;
  /** One probe's whole exchange. */
  timeoutMs: number;
  /** Probes in flight at once. */
  parallel: number;
}

export type ProbeResult = 'pass' | 'throttled' | 'fail';

export interface ProbeReport {
  pool: string;
  deployment: string;
  result: ProbeResult;
}

/** Out of rotation for long, and an operator's drain is not the reason: worth a probe. */
export function needsProbe(deployment: DeploymentSnapshot, nowMs: number, longCooldownMs: number): boolean {
  if (deployment.drained) return false;
  return deployment.circuit !== 'closed' || deployment.cooldownUntil - nowMs >= longCooldownMs;
}

/** Runs one round of probes; resolves with what each probe came to. A pool whose snapshot fails is left to the next run. */
export async function runProbes(options: ProbeRunOptions): Promise<ProbeReport[]> {
  const due: { pool: Pool; deployment: Deployment; kind: ProbeKind }[] = [];
  for (const pool of options.pools()) {
    const kind = pool.config.probe;
    if (kind === 'off') continue;
    let snapshot: DeploymentSnapshot[];
    try {
      snapshot = await options.store.snapshot(pool.layout);
    } catch (error) {
      options.logger.warn('prober: no snapshot of the pool', { pool: pool.name, error: (error as Error).message });
      continue;
    }
    const now = Date.now();
    for (const state of snapshot) {
      const deployment = pool.deployments.get(state.id);
      if (deployment && needsProbe(state, now, options.settings.longCooldownMs)) due.push({ pool, deployment, kind });
    }
  }
  return inBatches(due, options.parallel, ({ pool, deployment, kind }) =>
    probeOne(options, pool, deployment, kind).catch((error: Error): ProbeReport => {
      // A bug in one probe must not cost the others their run.
      options.logger.error('prober: a probe threw', { pool: pool.name, deployment: deployment.config.id, error: error.message });
      return { pool: pool.name, deployment: deployment.config.id, result: 'fail' };
    }),
  );
}

async function probeOne(options: ProbeRunOptions, pool: Pool, deployment: Deployment, kind: ProbeKind): Promise<ProbeReport> {
  const { metrics, logger, settings } = options;
  const id = deployment.config.id;
  const labels = { pool: pool.name, deployment: id };
  const requestId = `${PROBE_REQUEST_ID_PREFIX}${randomUUID()}`;
  const started = performance.now();
  const auth = await options.credentials.forAttempt(deployment, options.timeoutMs);
  const answer: ProbeAnswer =
    auth === undefined
      ? { kind: 'error', reason: 'no upstream credential' }
      : await sendProbe(deployment, kind, auth, requestId, options.timeoutMs);
  metrics.probeLatency.observe(labels, (performance.now() - started) / 1000);
  const result = resultOf(answer);
  metrics.probes.inc({ ...labels, result });
  const fields = { ...labels, requestId, probe: kind };
  try {
    if (result === 'pass') {
      await options.store.reset(pool.name, id, { slowStart: true });
      logger.info('probe passed: deployment back in rotation by slow start', { ...fields, slowStartMs: pool.config.slowStartMs });
    } else if (answer.kind === 'answer' && result === 'throttled') {
      const durationMs = answer.retryAfterMs ?? settings.defaultCooldownMs;
      await options.store.cooldown(pool.name, id, durationMs, { slowStart: durationMs >= settings.longCooldownMs });
      logger.debug('probe throttled: cooldown kept or extended', { ...fields, cooldownMs: durationMs });
    } else {
      logger.debug('probe failed: deployment stays out', { ...fields, ...describe(answer) });
    }
  } catch (error) {
    logger.warn('prober: could not publish the probe result', { ...fields, result, error: (error as Error).message });
  }
  return { ...labels, result };
}

function resultOf(answer: ProbeAnswer): ProbeResult {
  if (answer.kind === 'error') return 'fail';
  if (answer.status >= 200 && answer.status < 300) return 'pass';
  return answer.status === 429 ? 'throttled' : 'fail';
}

function describe(answer: ProbeAnswer): Record<string, unknown> {
  return answer.kind === 'answer' ? { status: answer.status } : { error: answer.reason };
}

/** Maps `items` through `work`, at most `parallel` at a time, keeping their order. */
async function inBatches<T, R>(items: readonly T[], parallel: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, parallel), items.length) }, lane));
  return results;
}
