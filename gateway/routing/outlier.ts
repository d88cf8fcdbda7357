/**
 * Outlier detection in the manner of Envoy's, on top of the breaker's failure rate. A deployment whose
 * attempts fail `consecutiveFailures` times in a row (5xx, 408, connection failures, timeouts, bodies
 * that broke off or stalled) is ejected: health.ts publishes an open circuit for every instance, for
 * baseEjectionMs × n, n being its ejection in a row (at most maxEjectionMs). As Envoy lowers the
 * multiplier each interval a host stays healthy, n drops by one for every baseEjectionMs the deployment
 * stayed in rotation after its last ejection ended. A client that left counts neither way.
 *
 * These counts are this instance's own record: the store holds when a circuit reopens, not how often
 * it opened. With several instances each counts the failures it sees, and the instance that ejects
 * counts the ejection (a deployment failing on every instance is ejected by the first to see its run).
 *
 * Whether a deployment may be taken out at all is the pool's to say (`Rotation`): never the last one
 * in rotation, so a pool whose deployments all fail keeps being tried and its clients see the
 * deployments' errors, not a gateway that has ejected everything. A deployment an operator drained
 * is out of rotation for this count, and is never put back by `rescue`: only `enable` does that. An
 * operator's reset (the store's `resetAt`, from any instance) makes every instance forget the
 * ejections in a row it counted before it, at its next decision about the deployment.
 */
import type { DeploymentSnapshot, PoolLayout } from '../../shared/store/types.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { Deployment } from '../pools.ts';
import type { LiveStore } from './live-store.ts';

export interface OutlierSettings {
  /** Failures in a row that eject; 0: never. */
  consecutiveFailures: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
}

export interface Ejection {
  durationMs: number;
  /** The how-many-th ejection in a row this is (1 for the first). */
  ejections: number;
}

interface OutlierRecord {
  consecutive: number;
  ejections: number;
  /** Epoch ms the latest ejection ends (0: never ejected). */
  ejectionEndsAt: number;
  /** Epoch ms the latest ejection was counted (0: never ejected). */
  ejectedAt: number;
  /** Epoch ms until which this instance took the deployment out (any cause; 0: not out by this instance). */
  outUntil: number;
}

export class Outliers {
  private readonly settings: OutlierSettings;
  private readonly records = new Map<string, OutlierRecord>();

  constructor(settings: OutlierSettings) {
    this.settings = settings;
  }

  /** An attempt whose answer came back whole: the run of failures ends. */
  succeeded(key: string): void {
    const record = this.records.get(key);
    if (record) record.consecutive = 0;
  }

  /** A failed attempt; true when it completes the run that ejects the deployment (the run starts over). */
  failed(key: string): boolean {
    const threshold = this.settings.consecutiveFailures;
    if (threshold === 0) return false;
    const record = this.record(key);
    record.consecutive += 1;
    if (record.consecutive < threshold) return false;
    record.consecutive = 0;
    return true;
  }

  /** How long the deployment's next ejection lasts, and which in a row it is; nothing is counted yet (see `ejected`). */
  next(key: string, now = Date.now()): Ejection {
    const { baseEjectionMs, maxEjectionMs } = this.settings;
    const record = this.record(key);
    const inRotationMs = Math.max(0, now - record.ejectionEndsAt);
    const earlier = record.ejectionEndsAt === 0 ? 0 : Math.max(0, record.ejections - Math.floor(inRotationMs / baseEjectionMs));
    const ejections = earlier + 1;
    return { durationMs: Math.min(baseEjectionMs * ejections, maxEjectionMs), ejections };
  }

  /** The ejection `next` described was published. */
  ejected(key: string, ejection: Ejection, now = Date.now()): void {
    const record = this.record(key);
    record.ejections = ejection.ejections;
    record.ejectionEndsAt = now + ejection.durationMs;
    record.ejectedAt = now;
  }

  /**
   * An operator reset the deployment at `resetAt` (epoch ms; 0: never): the ejections in a row counted
   * before that moment are forgotten, so the next one is a first again. True when some were.
   */
  forgetBefore(key: string, resetAt: number): boolean {
    const record = this.records.get(key);
    if (!record || record.ejections === 0 || record.ejectedAt >= resetAt) return false;
    record.ejections = 0;
    record.ejectionEndsAt = 0;
    record.ejectedAt = 0;
    return true;
  }

  /** This instance published an open circuit for the deployment (ejection, breaker or failed probe) until then. */
  markOut(key: string, until: number): void {
    this.record(key).outUntil = until;
  }

  /** The cluster has the deployment in rotation again (a probe succeeded, or the store granted a lease). */
  markIn(key: string): void {
    const record = this.records.get(key);
    if (record) record.outUntil = 0;
  }

  /** True while an open circuit this instance published for the deployment lasts. */
  isOut(key: string, now = Date.now()): boolean {
    return (this.records.get(key)?.outUntil ?? 0) > now;
  }

  private record(key: string): OutlierRecord {
    let record = this.records.get(key);
    if (!record) {
      record = { consecutive: 0, ejections: 0, ejectionEndsAt: 0, ejectedAt: 0, outUntil: 0 };
      this.records.set(key, record);
    }
    return record;
  }
}

/**
 * How many deployments of the pool, `id` aside, are in rotation now: not drained, circuit closed and
 * not cooling down. A half-open circuit lets one probe through at a time, so it counts as out, as do
 * a 429's cooldown and an operator's drain: what is left must be able to take the pool's traffic now.
 */
export function othersInRotation(snapshot: readonly DeploymentSnapshot[], id: string, now = Date.now()): number {
  return snapshot.filter((d) => d.id !== id && !d.drained && d.circuit === 'closed' && d.cooldownUntil <= now).length;
}

/** What took a deployment out: the breaker's rate, a run of consecutive failures, a failed probe. */
export type OpenCause = 'breaker' | 'outlier' | 'probe';

/** A refusal to take the last deployment in rotation out stands this long before the store is asked again. */
const KEPT_MEMORY_MS = 1000;
/** An open circuit that ends less than this later than one this instance already published is not sent again. */
const SAME_END_MS = 1000;

/**
 * Takes deployments out of rotation for every instance (an open circuit in the store), and never the
 * last of a pool. Which deployments are out is read from the store's snapshot: it is the cluster's
 * view (other instances' ejections and breakers, 429 cooldowns), where this instance's own record
 * would miss what the others took out and let two instances eject a whole pool between them. It
 * costs one store call, only when a deployment is about to be taken out. Reading and publishing are
 * two calls, so two instances taking a pool's last two out at the same moment can still leave none:
 * `rescue` puts one back for the first request that finds the pool so.
 */
export class Rotation {
  readonly outliers: Outliers;
  /** Per pool, the decisions to take a deployment out, one after another (so two cannot each count the other in). */
  private readonly deciding = new Map<string, Promise<boolean>>();
  /** Deployments kept in rotation as their pool's last, until when that answer stands. */
  private readonly kept = new Map<string, number>();
  private readonly stores: LiveStore;
  private readonly logger: Logger;
  private readonly metrics: Metrics;

  constructor(stores: LiveStore, settings: OutlierSettings, logger: Logger, metrics: Metrics) {
    this.stores = stores;
    this.outliers = new Outliers(settings);
    this.logger = logger;
    this.metrics = metrics;
  }

  /**
   * Publishes the deployment's circuit open for `durationMs` (counting `ejection` when it is one),
   * one decision per pool at a time. Resolves true when it is out, false when it was kept in rotation
   * as its pool's last (a probe's half-open circuit is then closed). Never rejects.
   */
  takeOut(
    pool: PoolLayout,
    deployment: Deployment,
    durationMs: number,
    cause: OpenCause,
    ejection?: Ejection,
    probe = false,
  ): Promise<boolean> {
    const decision = (this.deciding.get(pool.name) ?? Promise.resolve(true))
      .then(() => this.decide(pool, deployment, durationMs, cause, ejection, probe))
      .catch((error: Error) => {
        this.logger.warn('could not publish an open circuit', { error: error.message });
        return true;
      });
    this.deciding.set(pool.name, decision);
    void decision.then(() => {
      if (this.deciding.get(pool.name) === decision) this.deciding.delete(pool.name);
    });
    return decision;
  }

  private async decide(pool: PoolLayout, deployment: Deployment, durationMs: number, cause: OpenCause, ejection?: Ejection, probe = false) {
    const { key } = deployment;
    const id = deployment.config.id;
    if (this.outliers.isOut(key) && this.outliers.isOut(key, Date.now() + durationMs - SAME_END_MS)) {
      // This instance has it out about as long already (the breaker opened on the same failure).
      if (ejection) this.outliers.ejected(key, ejection);
      return true;
    }
    // Kept as the last in rotation a moment ago: that answer stands, without asking the store on every failure.
    const keptBefore = (this.kept.get(key) ?? 0) > Date.now();
    // The cluster's view (from the store that answers: while Redis is away, this instance's own).
    const snapshot = keptBefore ? undefined : await this.stores.snapshot(pool);
    if (ejection && this.outliers.forgetBefore(key, snapshot?.find((d) => d.id === id)?.resetAt ?? 0)) {
      // An operator reset it since the ejections this one followed: a first ejection again.
      ejection = this.outliers.next(key);
      durationMs = ejection.durationMs;
    }
    const until = Date.now() + durationMs;
    const fields = { pool: pool.name, deployment: id, cause, openMs: durationMs, ejections: ejection?.ejections };
    if (!snapshot || othersInRotation(snapshot, id) === 0) {
      if (!keptBefore) {
        this.logger.warn('deployment kept in rotation: no other deployment of its pool is in rotation', fields);
        this.kept.set(key, Date.now() + KEPT_MEMORY_MS);
      }
      if (probe) await this.stores.closeCircuit(pool.name, id);
      return false;
    }
    await this.stores.openCircuit(pool.name, id, durationMs);
    this.outliers.markOut(key, until);
    if (ejection) this.outliers.ejected(key, ejection);
    this.logger.warn('circuit opened: deployment out of rotation for every instance', fields);
    this.metrics.circuitOpens.inc({ pool: pool.name, deployment: id, cause });
    return true;
  }

  /**
   * The store refused the pool as unavailable. When open circuits alone keep every deployment out
   * (none cooling down after a 429: that is the deployments' own word), the one not in `exclude` that
   * would reopen soonest is closed: a pool is never refused for ejections alone. True when the request
   * should ask the store again: one was put back, here or (a moment ago) by another request.
   */
  async rescue(pool: PoolLayout, exclude: readonly string[]): Promise<boolean> {
    const now = Date.now();
    // A drained deployment is out by an operator's word: it counts for nothing here and is never put back.
    const snapshot = (await this.stores.snapshot(pool)).filter((d) => !d.drained);
    if (snapshot.some((d) => d.cooldownUntil > now)) return false;
    const candidates = snapshot.filter((d) => !exclude.includes(d.id));
    if (snapshot.some((d) => d.circuit === 'closed')) return candidates.some((d) => d.circuit === 'closed');
    if (candidates.length === 0) return false;
    const soonest = candidates.reduce((a, b) => (b.circuitOpenUntil < a.circuitOpenUntil ? b : a));
    this.logger.warn('no deployment of the pool in rotation: one put back', { pool: pool.name, deployment: soonest.id });
    this.outliers.markIn(`${pool.name}/${soonest.id}`);
    await this.stores.closeCircuit(pool.name, soonest.id);
    return true;
  }
}
