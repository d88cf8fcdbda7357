import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { GatewaySettings } from '../../../shared/config/schema.ts';
import { MemoryStore } from '../../../shared/store/memory-store.ts';
import { RedisStore } from '../../../shared/store/redis-store.ts';
import type { Store, WindowObservation } from '../../../shared/store/types.ts';
import { Metrics } from '../../../gateway/metrics.ts';
import type { Pool } from '../../../gateway/pools.ts';
import { LeaseKeeper } from '../../../gateway/routing/lease-keeper.ts';
import { HeldLease, Leasing, type Grant } from '../../../gateway/routing/leasing.ts';
import { LiveStore } from '../../../gateway/routing/live-store.ts';
import { memoryLogger, poolSetup, quietLogger, redisStore, unreachableStore } from '../../helpers/collaborators.ts';
import { startRedisServer } from '../../helpers/redis-server.ts';
import { uniquePrefix } from '../../helpers/store-suite.ts';

const logger = quietLogger();

/** Everything a test opened, closed after it (keepers stop their timers, stores their connections). */
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Parts {
  shared: Store;
  stores: LiveStore;
  keeper: LeaseKeeper;
  leasing: Leasing;
  metrics: Metrics;
}

/** The leasing stack over `shared` (a MemoryStore as this instance's fallback, as in the gateway). */
function parts(shared: Store, settings: GatewaySettings, log = logger): Parts {
  const metrics = new Metrics(false);
  const stores = new LiveStore(shared, new MemoryStore(), metrics, log);
  const keeper = new LeaseKeeper(stores, settings.leaseMs, log);
  cleanups.push(
    () => shared.close(),
    () => stores.close(),
    () => keeper.close(),
  );
  return { shared, stores, keeper, leasing: new Leasing(stores, keeper, settings, log), metrics };
}

function granted(grant: Grant): HeldLease {
  assert.ok(grant.ok, `expected a grant, got ${JSON.stringify(grant.ok ? '' : grant.refusal)}`);
  return grant.lease;
}

async function deploymentState(store: Store, pool: Pool, id: string) {
  const found = (await store.snapshot(pool.layout)).find((d) => d.id === id);
  assert.ok(found, `no deployment ${id} in the snapshot`);
  return found;
}

async function inFlight(store: Store, pool: Pool): Promise<Record<string, number>> {
  return Object.fromEntries((await store.snapshot(pool.layout)).map((d) => [d.id, d.inFlight]));
}

for (const [kind, open] of [
  ['MemoryStore', () => new MemoryStore()],
  ['RedisStore', () => redisStore()],
] as const) {
  describe(`Leasing on a ${kind}`, () => {
    test('a grant is held in the store and tracked for renewal until released', async () => {
      const { pool, settings } = poolSetup([{ id: 'a' }, { id: 'b' }]);
      const { shared, keeper, leasing } = parts(open(), settings);
      const grant = await leasing.acquire({ pool, estimatedTokens: 0 }, ['a'], undefined);
      const lease = granted(grant);
      assert.equal(grant.store, shared, 'the shared store decided');
      assert.equal(lease.store, shared, 'and the lease is released there');
      assert.equal(lease.deployment, pool.deployments.get('b'), 'the excluded deployment is not chosen');
      assert.equal(keeper.size, 1);
      assert.deepEqual(await inFlight(shared, pool), { a: 0, b: 1 });
      await lease.release();
      assert.equal(keeper.size, 0);
      assert.deepEqual(await inFlight(shared, pool), { a: 0, b: 0 });
    });

    test('a refusal holds nothing', async () => {
      const { pool, settings } = poolSetup([{ id: 'a' }]);
      const { shared, keeper, leasing } = parts(open(), settings);
      const grant = await leasing.acquire({ pool, estimatedTokens: 0 }, ['a'], undefined);
      assert.equal(grant.ok, false);
      assert.equal(grant.lease, undefined);
      assert.equal(grant.store, shared);
      assert.equal(keeper.size, 0);
      assert.deepEqual(await inFlight(shared, pool), { a: 0 });
    });

    test('release with a charge replaces the reservation; without one keeps it', async () => {
      const { pool, settings } = poolSetup([{ id: 'a', tpm: 100_000 }]);
      const { shared, leasing } = parts(open(), settings);
      const charged = granted(await leasing.acquire({ pool, estimatedTokens: 300 }, [], undefined));
      assert.equal((await deploymentState(shared, pool, 'a')).tokensInWindow, 300, 'the estimate is reserved on grant');
      await charged.release(42);
      assert.equal((await deploymentState(shared, pool, 'a')).tokensInWindow, 42);
      const kept = granted(await leasing.acquire({ pool, estimatedTokens: 300 }, [], undefined));
      await kept.release();
      assert.equal((await deploymentState(shared, pool, 'a')).tokensInWindow, 342);
    });

    // The store ignores a charge for a lease it no longer holds, but applies an observation either
    // way: a later release reaching the store would show as the observed deficit booked.
    const observed: WindowObservation = { tpm: 10_000, remainingTokens: 1000 };

    test('release twice: the first call counts, the later one does nothing', async () => {
      const { pool, settings } = poolSetup([{ id: 'a', tpm: 10_000 }]);
      const { shared, keeper, leasing } = parts(open(), settings);
      const lease = granted(await leasing.acquire({ pool, estimatedTokens: 300 }, [], undefined));
      await lease.release(10);
      await lease.release(500, observed);
      const state = await deploymentState(shared, pool, 'a');
      assert.equal(state.inFlight, 0);
      assert.equal(state.tokensInWindow, 10, 'charged once, with the first call’s charge');
      assert.equal(keeper.size, 0);
    });

    test('concurrent releases release exactly once, never below zero in flight', async () => {
      const { pool, settings } = poolSetup([{ id: 'a', tpm: 10_000 }]);
      const { shared, keeper, leasing } = parts(open(), settings);
      const other = granted(await leasing.acquire({ pool, estimatedTokens: 0 }, [], undefined));
      const lease = granted(await leasing.acquire({ pool, estimatedTokens: 300 }, [], undefined));
      await Promise.all([lease.release(10), lease.release(20, observed), lease.release(undefined, observed)]);
      const state = await deploymentState(shared, pool, 'a');
      assert.equal(state.inFlight, 1, 'only this lease left; the other one is still held');
      assert.equal(state.tokensInWindow, 10);
      assert.equal(keeper.size, 1);
      await other.release();
      assert.equal((await deploymentState(shared, pool, 'a')).inFlight, 0);
    });

    test('a store answer naming a deployment the pool does not have is released and thrown', async () => {
      const { pool, settings } = poolSetup([{ id: 'a' }]);
      // The store's view of the pool has a deployment the gateway's map lacks (a config out of step).
      const skewed: Pool = {
        ...pool,
        layout: { ...pool.layout, deployments: [...pool.layout.deployments, { id: 'ghost', priority: 1, weight: 1 }] },
      };
      const { shared, keeper, leasing } = parts(open(), settings);
      await assert.rejects(leasing.acquire({ pool: skewed, estimatedTokens: 0 }, ['a'], undefined), /unknown deployment ghost/);
      assert.equal(keeper.size, 0);
      assert.deepEqual(await inFlight(shared, skewed), { a: 0, ghost: 0 }, 'the lease did not leak');
    });
  });
}

describe('LeaseKeeper', () => {
  /** One instance with a live keeper and one whose keeper dies, on one store; a lease each, and one untracked. */
  async function renewals(shared: Store): Promise<void> {
    const leaseMs = 600;
    const { pool, settings: defaults } = poolSetup([{ id: 'live' }, { id: 'untracked' }, { id: 'dead' }]);
    const settings = { ...defaults, leaseMs };
    const instance = parts(shared, settings);
    // A second instance on the same store whose keeper dies (as when its process is killed).
    const dying = new LeaseKeeper(instance.stores, leaseMs, logger);
    cleanups.push(() => dying.close());
    const dyingLeasing = new Leasing(instance.stores, dying, settings, logger);
    const on = (id: string) => pool.layout.deployments.map((d) => d.id).filter((other) => other !== id);

    const live = granted(await instance.leasing.acquire({ pool, estimatedTokens: 0 }, on('live'), undefined));
    const untracked = granted(await instance.leasing.acquire({ pool, estimatedTokens: 0 }, on('untracked'), undefined));
    granted(await dyingLeasing.acquire({ pool, estimatedTokens: 0 }, on('dead'), undefined));
    instance.keeper.untrack(untracked.lease);
    dying.close();
    assert.deepEqual(await inFlight(shared, pool), { live: 1, untracked: 1, dead: 1 });

    await sleep(2.5 * leaseMs);
    assert.deepEqual(await inFlight(shared, pool), { live: 1, untracked: 0, dead: 0 }, 'only the renewed lease is left');
    await live.release();
    assert.deepEqual(await inFlight(shared, pool), { live: 0, untracked: 0, dead: 0 });
  }

  test('a renewal round that outlasts the interval is not overlapped by the next one', async () => {
    const slow = new MemoryStore();
    let running = 0;
    let most = 0;
    let rounds = 0;
    const renew = slow.renew.bind(slow);
    // Each round takes four intervals (leaseMs 750: a round every 250 ms), as 100 calls in a row on a busy Redis might.
    slow.renew = async (leases, leaseMs) => {
      rounds += 1;
      running += 1;
      most = Math.max(most, running);
      await sleep(1000);
      running -= 1;
      return renew(leases, leaseMs);
    };
    const { pool, settings: defaults } = poolSetup([{ id: 'a' }]);
    const { leasing } = parts(slow, { ...defaults, leaseMs: 750 });
    const lease = granted(await leasing.acquire({ pool, estimatedTokens: 0 }, [], undefined));
    await sleep(1700);
    assert.equal(most, 1, 'one round at a time');
    assert.ok(rounds >= 1 && rounds <= 2, `rounds: ${rounds}`);
    await lease.release();
  });

  test('renews tracked leases past leaseMs; untracked ones and a dead keeper’s expire (MemoryStore and RedisStore at once)', async () => {
    await Promise.all([renewals(new MemoryStore()), renewals(redisStore())]);
  });
});

describe('LiveStore', () => {
  test('routes on the shared store while it answers, on the fallback when it fails, and counts each failure', async () => {
    const redis = await startRedisServer();
    cleanups.push(() => redis.stop());
    const { pool, settings } = poolSetup([{ id: 'a' }]);
    const { logger: log, lines } = memoryLogger();
    // A store on a private redis-server, which this test stops.
    const { shared, stores, leasing, metrics } = parts(new RedisStore(redis.url, { keyPrefix: uniquePrefix() }), settings, log);

    const first = await leasing.acquire({ pool, estimatedTokens: 0 }, [], undefined);
    assert.equal(first.store, shared);
    await granted(first).release();
    assert.equal((await metrics.storeErrors.get()).values[0]?.value ?? 0, 0);

    await redis.stop();
    const started = performance.now();
    const second = await leasing.acquire({ pool, estimatedTokens: 0 }, [], undefined);
    assert.ok(performance.now() - started < 5000, 'the failure is quick, not a hang');
    assert.equal(second.store, stores.fallback, 'decided on this instance’s own view');
    const lease = granted(second);
    assert.equal(lease.store, stores.fallback, 'and released there');
    assert.deepEqual(await inFlight(stores.fallback, pool), { a: 1 });
    await lease.release();
    assert.deepEqual(await inFlight(stores.fallback, pool), { a: 0 });
    assert.equal((await metrics.storeErrors.get()).values[0]?.value, 1);
    assert.ok(lines.some((line) => line.level === 'warn' && line.message.startsWith('store unavailable')));
    assert.equal(stores.current(), stores.fallback, 'known down: the next calls go to the fallback without trying Redis');
    const until = await stores.cooldown(pool.name, 'a', 30_000);
    assert.ok(until > Date.now(), 'a cooldown still has an end');
    assert.ok((await deploymentState(stores.fallback, pool, 'a')).cooldownUntil >= until - 5, 'and is kept in the own view');
    assert.equal(await stores.ping(), false);
  });

  test('a release the store fails is logged once, however often it is called, and never throws', async () => {
    const { pool, settings, deployment } = poolSetup([{ id: 'a' }]);
    const { logger: log, lines } = memoryLogger();
    const { keeper, leasing } = parts(new MemoryStore(), settings, log);
    const grant = granted(await leasing.acquire({ pool, estimatedTokens: 0 }, [], undefined));
    const broken = await unreachableStore();
    cleanups.push(() => broken.close());
    // The same lease, as held against a store that has gone away.
    const held = new HeldLease(grant.lease, deployment('a'), broken, keeper, log);
    await Promise.all([held.release(5), held.release(5)]);
    await held.release();
    assert.equal(lines.filter((line) => line.message === 'lease release failed').length, 1);
    await grant.release();
    assert.equal(keeper.size, 0);
  });

  test('while the shared store fails, leases granted by the fallback are renewed there', async () => {
    const { pool, settings } = poolSetup([{ id: 'a' }]);
    const { logger: log } = memoryLogger();
    const { keeper, leasing, stores } = parts(await unreachableStore(), { ...settings, leaseMs: 600 }, log);
    const lease = granted(await leasing.acquire({ pool, estimatedTokens: 0 }, [], undefined));
    assert.equal(lease.store, stores.fallback);
    await sleep(1200); // two lease times: only renewals keep it
    assert.deepEqual(await inFlight(stores.fallback, pool), { a: 1 }, 'still in flight in the own view');
    assert.equal(keeper.size, 1);
    await lease.release();
    assert.deepEqual(await inFlight(stores.fallback, pool), { a: 0 });
  });
});

after(() => logger.close());
