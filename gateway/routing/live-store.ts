/**
 * The one place that decides which store the request path talks to. The shared store (Redis) holds
 * the cluster's state; this instance's own in-memory view (the fallback) stands in while Redis does
 * not answer, for everything: routing decisions, leases and their renewal, cooldowns, circuits,
 * client quotas and the wait queue.
 *
 * A store circuit of its own keeps an outage cheap: once Redis is known to be down (its client is
 * reconnecting, or a call failed or timed out), every call goes to the fallback at once instead of
 * waiting out a command timeout, and Redis is probed in the background until it answers. Then the
 * cooldowns and circuits this instance learnt meanwhile are published to it, so the cluster does not
 * send a second storm to a deployment this instance already found throttled or broken.
 *
 * An operator's drain, enable and reset go the same way: to the shared store and to the own view;
 * made while Redis is away they hold in the own view and are published when it answers. So that a
 * drain made through another instance holds here during an outage too, which deployments are drained
 * is copied from the shared store into the own view every DRAIN_MIRROR_INTERVAL_MS while it answers,
 * for the pools this instance routes (one snapshot per pool).
 */
import type {
  AcquireInput,
  AcquireResult,
  DeploymentSnapshot,
  Lease,
  PoolLayout,
  QuotaInput,
  QuotaLease,
  QuotaResult,
  SlowStartOption,
  Store,
} from '../../shared/store/types.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';

export interface Acquired {
  /** The store that made the decision: the lease is released there, and a waiter's ticket lives there. */
  store: Store;
  result: AcquireResult;
}

/** How often a shared store known to be down is tried again (a ping, with its own timeout). */
const PROBE_INTERVAL_MS = 250;

/** How often the drained deployments are copied from the shared store into the own view (see above). */
const DRAIN_MIRROR_INTERVAL_MS = 2000;

/** Health state this instance published while the shared store was away, replayed when it answers. */
interface Learnt {
  pool: string;
  deploymentId: string;
  cooldownUntil?: number;
  /** That cooldown ends in a slow start (Store.cooldown's option). */
  cooldownSlowStart?: boolean;
  /** Epoch ms the circuit stays open; 0 when it closed meanwhile. */
  circuitOpenUntil?: number;
  /** An operator drained (true) or enabled (false) it meanwhile: the latest word. */
  drained?: boolean;
  /** An operator reset it meanwhile: replayed first; what was learnt before it is dropped. */
  reset?: boolean;
  /** That reset started a slow start (Store.reset's option: an active probe passed). */
  resetSlowStart?: boolean;
}

export interface LiveStoreOptions {
  /** How often drained deployments are copied into the own view; 0: never. Default DRAIN_MIRROR_INTERVAL_MS. */
  drainMirrorIntervalMs?: number;
}

export class LiveStore {
  readonly shared: Store;
  /** This instance's own view, used while the shared store does not answer. */
  readonly fallback: Store;
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private sharedDown = false;
  private probe: NodeJS.Timeout | undefined;
  private probing = false;
  private readonly learnt = new Map<string, Learnt>();
  /** Which store booked a client's quota, so the settlement goes there too. */
  private readonly quotaStores = new WeakMap<QuotaLease, Store>();
  /** The pools this instance routes (seen in acquire), whose drained deployments are mirrored. */
  private readonly layouts = new Map<string, PoolLayout>();
  private readonly drainMirrorIntervalMs: number;
  private mirror: NodeJS.Timeout | undefined;
  private mirroring = false;
  /** Counts drains, enables and resets made here, so a mirror round that read before one does not undo it. */
  private operatorEdits = 0;

  constructor(shared: Store, fallback: Store, metrics: Metrics, logger: Logger, options: LiveStoreOptions = {}) {
    this.shared = shared;
    this.fallback = fallback;
    this.metrics = metrics;
    this.logger = logger;
    this.drainMirrorIntervalMs = options.drainMirrorIntervalMs ?? DRAIN_MIRROR_INTERVAL_MS;
  }

  /** The store that answers now: the shared one unless it is known to be down. */
  current(): Store {
    if (!this.sharedDown && this.shared.connected?.() === false) this.markDown('its connection is down');
    return this.sharedDown ? this.fallback : this.shared;
  }

  /** True when calls to `store` may be sent now (the fallback always answers). */
  answers(store: Store): boolean {
    return store !== this.shared || this.current() === this.shared;
  }

  /** Chooses a deployment on the store that answers; the fallback decides when the shared store fails now. */
  async acquire(input: AcquireInput): Promise<Acquired> {
    if (this.layouts.get(input.pool.name) !== input.pool) this.watch(input.pool);
    const { store, value } = await this.call((s) => s.acquire(input));
    return { store, result: value };
  }

  /** A cooldown, cluster-wide while the shared store answers; also kept in this instance's own view for an outage. */
  async cooldown(pool: string, deploymentId: string, durationMs: number, options?: SlowStartOption): Promise<number> {
    // Issued before anything is awaited: a release the caller sends next must reach Redis after it.
    const publishing = this.publish(pool, deploymentId, (s) => s.cooldown(pool, deploymentId, durationMs, options));
    const local = await this.fallback.cooldown(pool, deploymentId, durationMs, options);
    const published = await publishing;
    if (published !== undefined) return published;
    const before = this.learnt.get(`${pool}/${deploymentId}`);
    this.remember(pool, deploymentId, {
      cooldownUntil: Math.max(local, before?.cooldownUntil ?? 0),
      cooldownSlowStart: options?.slowStart === true || before?.cooldownSlowStart === true,
    });
    return local;
  }

  async openCircuit(pool: string, deploymentId: string, durationMs: number): Promise<void> {
    await this.fallback.openCircuit(pool, deploymentId, durationMs);
    const published = await this.publish(pool, deploymentId, (s) => s.openCircuit(pool, deploymentId, durationMs).then(() => true));
    if (!published) this.remember(pool, deploymentId, { circuitOpenUntil: Date.now() + durationMs });
  }

  async closeCircuit(pool: string, deploymentId: string): Promise<void> {
    await this.fallback.closeCircuit(pool, deploymentId);
    const published = await this.publish(pool, deploymentId, (s) => s.closeCircuit(pool, deploymentId).then(() => true));
    if (!published) this.remember(pool, deploymentId, { circuitOpenUntil: 0 });
  }

  /**
   * An operator's drain (Store.drain): out of rotation for every instance until enabled, in this
   * instance's own view too; while the shared store is away, published when it answers. True when it was
   * in rotation, by the shared store's word when it answered.
   */
  async drain(pool: string, deploymentId: string): Promise<boolean> {
    this.operatorEdits += 1;
    const publishing = this.publish(pool, deploymentId, (s) => s.drain(pool, deploymentId));
    const local = await this.fallback.drain(pool, deploymentId);
    const published = await publishing;
    if (published !== undefined) return published;
    this.remember(pool, deploymentId, { drained: true });
    return local;
  }

  /** An operator's enable (Store.enable), the same way as drain. True when it was drained. */
  async enable(pool: string, deploymentId: string): Promise<boolean> {
    this.operatorEdits += 1;
    const publishing = this.publish(pool, deploymentId, (s) => s.enable(pool, deploymentId));
    const local = await this.fallback.enable(pool, deploymentId);
    const published = await publishing;
    if (published !== undefined) return published;
    this.remember(pool, deploymentId, { drained: false });
    return local;
  }

  /**
   * An operator's reset (Store.reset): cooldown and circuit cleared for every instance and in the own
   * view; while the shared store is away, published when it answers, before what this instance learns after it.
   */
  async reset(pool: string, deploymentId: string, options?: SlowStartOption): Promise<void> {
    this.operatorEdits += 1;
    const publishing = this.publish(pool, deploymentId, (s) => s.reset(pool, deploymentId, options).then(() => true));
    await this.fallback.reset(pool, deploymentId, options);
    if (await publishing) return;
    this.remember(pool, deploymentId, {
      reset: true,
      resetSlowStart: options?.slowStart === true,
      cooldownUntil: undefined,
      cooldownSlowStart: undefined,
      circuitOpenUntil: undefined,
    });
  }

  /** Renews leases where they were granted; those of a shared store that is down wait for it (or expire there). */
  async renew(leases: readonly Lease[], leaseMs: number, grantedBy: (lease: Lease) => Store): Promise<void> {
    const byStore = new Map<Store, Lease[]>();
    for (const lease of leases) {
      const store = grantedBy(lease);
      if (!this.answers(store)) continue;
      const group = byStore.get(store);
      if (group) group.push(lease);
      else byStore.set(store, [lease]);
    }
    for (const [store, group] of byStore) {
      try {
        await store.renew(group, leaseMs);
      } catch (error) {
        if (store === this.shared) this.markDown((error as Error).message);
        throw error;
      }
    }
  }

  async acquireQuota(input: QuotaInput): Promise<QuotaResult> {
    const { store, value } = await this.call((s) => s.acquireQuota(input));
    if (value.ok) this.quotaStores.set(value.lease, store);
    return value;
  }

  async releaseQuota(lease: QuotaLease, chargedTokens: number | undefined): Promise<void> {
    const store = this.quotaStores.get(lease) ?? this.current();
    if (!this.answers(store)) return;
    await store.releaseQuota(lease, chargedTokens);
  }

  /** Live state of a pool's deployments, from the store that answers. */
  async snapshot(pool: PoolLayout): Promise<DeploymentSnapshot[]> {
    return (await this.call((s) => s.snapshot(pool))).value;
  }

  /** True when the shared store answers (readiness). */
  ping(): Promise<boolean> {
    return this.shared.ping();
  }

  async close(): Promise<void> {
    clearInterval(this.probe);
    clearInterval(this.mirror);
    await this.fallback.close();
  }

  /** Runs `call` on the store that answers; when the shared store fails now, marks it down and runs it on the fallback. */
  private async call<T>(call: (store: Store) => Promise<T>): Promise<{ store: Store; value: T }> {
    const store = this.current();
    if (store === this.fallback) return { store, value: await call(store) };
    try {
      return { store, value: await call(store) };
    } catch (error) {
      this.markDown((error as Error).message);
      return { store: this.fallback, value: await call(this.fallback) };
    }
  }

  /** Publishes to the shared store when it answers; undefined when it could not (the caller remembers what). */
  private async publish<T>(pool: string, deploymentId: string, call: (store: Store) => Promise<T>): Promise<T | undefined> {
    if (this.current() !== this.shared) return undefined;
    try {
      return await call(this.shared);
    } catch (error) {
      this.logger.warn('could not publish to the store: kept in this instance’s own view', {
        pool,
        deployment: deploymentId,
        error: (error as Error).message,
      });
      this.markDown((error as Error).message);
      return undefined;
    }
  }

  private remember(pool: string, deploymentId: string, change: Omit<Learnt, 'pool' | 'deploymentId'>): void {
    const key = `${pool}/${deploymentId}`;
    this.learnt.set(key, { ...this.learnt.get(key), pool, deploymentId, ...change });
  }

  private markDown(reason: string): void {
    this.metrics.storeErrors.inc();
    if (this.sharedDown) return;
    this.sharedDown = true;
    this.logger.warn('store unavailable: routing on this instance’s own view until it answers', { error: reason });
    this.probe = setInterval(() => void this.tryShared(), PROBE_INTERVAL_MS);
    this.probe.unref();
  }

  private async tryShared(): Promise<void> {
    if (this.probing || this.shared.connected?.() === false) return;
    this.probing = true;
    try {
      if (!(await this.shared.ping())) return;
      await this.replayLearnt();
      clearInterval(this.probe);
      this.sharedDown = false;
      this.logger.info('store answers again: routing on the shared state');
    } catch (error) {
      this.logger.warn('store answered the probe but not the replay', { error: (error as Error).message });
    } finally {
      this.probing = false;
    }
  }

  /** What this instance learnt while the shared store was away, published now with the time that is left. */
  private async replayLearnt(): Promise<void> {
    const now = Date.now();
    for (const [key, learnt] of this.learnt) {
      const { pool, deploymentId, cooldownUntil, circuitOpenUntil, drained } = learnt;
      if (learnt.reset) {
        await this.shared.reset(pool, deploymentId, learnt.resetSlowStart ? { slowStart: true } : undefined);
        // Once: a replay broken off after this must not clear what others published since.
        learnt.reset = false;
      }
      if (drained === true) await this.shared.drain(pool, deploymentId);
      else if (drained === false) await this.shared.enable(pool, deploymentId);
      if (cooldownUntil !== undefined && cooldownUntil > now)
        await this.shared.cooldown(pool, deploymentId, cooldownUntil - now, learnt.cooldownSlowStart ? { slowStart: true } : undefined);
      if (circuitOpenUntil === 0) await this.shared.closeCircuit(pool, deploymentId);
      else if (circuitOpenUntil !== undefined && circuitOpenUntil > now)
        await this.shared.openCircuit(pool, deploymentId, circuitOpenUntil - now);
      this.learnt.delete(key);
    }
  }

  /** A pool this instance routes: its drained deployments are mirrored into the own view from now on. */
  private watch(pool: PoolLayout): void {
    this.layouts.set(pool.name, pool);
    if (this.mirror || this.drainMirrorIntervalMs <= 0) return;
    this.mirror = setInterval(() => void this.mirrorDrains(), this.drainMirrorIntervalMs);
    this.mirror.unref();
  }

  /**
   * Copies which deployments are drained from the shared store into the own view, while the shared
   * store answers. A failure is left to the next round (and the calls on the request path to notice).
   */
  private async mirrorDrains(): Promise<void> {
    if (this.mirroring || this.current() !== this.shared) return;
    this.mirroring = true;
    try {
      for (const layout of this.layouts.values()) {
        const edits = this.operatorEdits;
        const cluster = await this.shared.snapshot(layout);
        // A drain, enable or reset made here meanwhile is newer than what was read.
        if (edits !== this.operatorEdits || this.current() !== this.shared) continue;
        const own = new Map((await this.fallback.snapshot(layout)).map((d) => [d.id, d.drained]));
        for (const { id, drained } of cluster) {
          if (drained && own.get(id) === false) await this.fallback.drain(layout.name, id);
          else if (!drained && own.get(id) === true) await this.fallback.enable(layout.name, id);
        }
      }
    } catch {
      // The next round tries again.
    } finally {
      this.mirroring = false;
    }
  }
}
