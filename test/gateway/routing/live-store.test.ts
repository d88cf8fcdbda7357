/**
 * LiveStore and an operator's hand on a deployment: drain, enable and reset reach the shared store and
 * this instance's own view; made while Redis is away they hold in the own view and are published when
 * it answers; drains made through other instances are mirrored into the own view, so they hold here
 * during an outage too.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, test } from 'node:test';
import { MemoryStore } from '../../../shared/store/memory-store.ts';
import { RedisStore } from '../../../shared/store/redis-store.ts';
import type { Store } from '../../../shared/store/types.ts';
import { Metrics } from '../../../gateway/metrics.ts';
import type { Pool } from '../../../gateway/pools.ts';
import { LiveStore, type LiveStoreOptions } from '../../../gateway/routing/live-store.ts';
import { poolSetup, quietLogger, redisStore } from '../../helpers/collaborators.ts';
import { until } from '../../helpers/fixtures.ts';
import { startRedisServer, type RedisServer } from '../../helpers/redis-server.ts';
import { uniquePrefix } from '../../helpers/store-suite.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function live(shared: Store, options: LiveStoreOptions = {}): LiveStore {
  const stores = new LiveStore(shared, new MemoryStore(), new Metrics(false), quietLogger(), options);
  cleanups.push(
    () => shared.close(),
    () => stores.close(),
  );
  return stores;
}

async function privateRedis(): Promise<RedisServer> {
  const redis = await startRedisServer();
  cleanups.push(async () => {
    if (redis.process.signalCode === null && redis.process.exitCode === null) redis.process.kill('SIGCONT');
    await redis.stop();
  });
  return redis;
}

async function stateOf(store: Store, pool: Pool, id: string) {
  const found = (await store.snapshot(pool.layout)).find((d) => d.id === id);
  assert.ok(found, `no deployment ${id} in the snapshot`);
  return found;
}

/** The deployments `count` acquires through the live store were granted (each released at once). */
async function granted(stores: LiveStore, pool: Pool, count: number): Promise<Set<string>> {
  const chosen = new Set<string>();
  for (let i = 0; i < count; i++) {
    const { store, result } = await stores.acquire({ pool: pool.layout, leaseId: randomUUID(), leaseMs: 30_000, estimatedTokens: 0 });
    assert.ok(result.ok, `expected a lease, got ${JSON.stringify(result)}`);
    chosen.add(result.lease.deploymentId);
    await store.release(result.lease);
  }
  return chosen;
}

describe('LiveStore: drain, enable, reset', () => {
  test('while the shared store answers, each reaches it and the own view; drain and enable say whether they changed anything', async () => {
    const { pool } = poolSetup([{ id: 'a' }, { id: 'b' }]);
    const stores = live(redisStore());
    assert.equal(await stores.drain(pool.name, 'a'), true);
    assert.equal(await stores.drain(pool.name, 'a'), false, 'idempotent');
    assert.equal((await stateOf(stores.shared, pool, 'a')).drained, true, 'cluster-wide');
    assert.equal((await stateOf(stores.fallback, pool, 'a')).drained, true, 'and in the own view');
    assert.deepEqual([...(await granted(stores, pool, 10))], ['b']);
    assert.equal(await stores.enable(pool.name, 'a'), true);
    assert.equal(await stores.enable(pool.name, 'a'), false);
    assert.deepEqual(
      [(await stateOf(stores.shared, pool, 'a')).drained, (await stateOf(stores.fallback, pool, 'a')).drained],
      [false, false],
    );

    await stores.cooldown(pool.name, 'a', 30_000);
    await stores.openCircuit(pool.name, 'b', 30_000);
    await stores.reset(pool.name, 'a');
    await stores.reset(pool.name, 'b');
    for (const store of [stores.shared, stores.fallback]) {
      const [a, b] = [await stateOf(store, pool, 'a'), await stateOf(store, pool, 'b')];
      assert.deepEqual([a.cooldownUntil, b.circuit], [0, 'closed']);
      assert.ok(a.resetAt > 0 && b.resetAt > 0);
    }
  });

  test('made while Redis is frozen, they hold in the own view and are published when it answers, a reset before what was learnt after it', async () => {
    const redis = await privateRedis();
    const { pool } = poolSetup([{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
    const stores = live(new RedisStore(redis.url, { keyPrefix: uniquePrefix() }));
    await stores.cooldown(pool.name, 'c', 60_000); // in Redis before the freeze: only a replayed reset clears it there
    redis.process.kill('SIGSTOP');
    // The first call finds Redis frozen (its command timeout); every call after it goes to the own view at once.
    await granted(stores, pool, 1);
    assert.equal(stores.current(), stores.fallback);

    const started = performance.now();
    assert.equal(await stores.drain(pool.name, 'a'), true);
    await stores.reset(pool.name, 'c');
    await stores.cooldown(pool.name, 'b', 60_000);
    await stores.reset(pool.name, 'b'); // the cooldown learnt before it is void
    await stores.drain(pool.name, 'b');
    assert.equal(await stores.enable(pool.name, 'b'), true, 'the latest word counts');
    assert.ok(performance.now() - started < 100, 'none of them waited for Redis');
    assert.deepEqual([...(await granted(stores, pool, 10))].sort(), ['b', 'c'], 'a is out in the own view; c is back there');

    redis.process.kill('SIGCONT');
    await until(() => stores.current() === stores.shared, 5000, 'the store circuit to close');
    const [a, b, c] = [
      await stateOf(stores.shared, pool, 'a'),
      await stateOf(stores.shared, pool, 'b'),
      await stateOf(stores.shared, pool, 'c'),
    ];
    assert.equal(a.drained, true, 'the drain reached Redis');
    assert.deepEqual([b.drained, b.cooldownUntil], [false, 0], 'enabled, and the cooldown before the reset not replayed');
    assert.equal(c.cooldownUntil, 0, 'the reset reached Redis');
    assert.ok(c.resetAt > 0);
  });

  test('drains made through another instance are mirrored into the own view, and hold here while Redis is down', async () => {
    const redis = await privateRedis();
    const { pool } = poolSetup([{ id: 'a' }, { id: 'b' }]);
    const keyPrefix = uniquePrefix();
    const stores = live(new RedisStore(redis.url, { keyPrefix }), { drainMirrorIntervalMs: 50 });
    const other = new RedisStore(redis.url, { keyPrefix });
    cleanups.push(() => other.close());
    await granted(stores, pool, 1); // the pool is one this instance routes
    const ownDrained = async () => (await stateOf(stores.fallback, pool, 'a')).drained;

    await other.drain(pool.name, 'a');
    await until(ownDrained, 2000, 'the drain to be mirrored');
    await other.enable(pool.name, 'a');
    await until(async () => !(await ownDrained()), 2000, 'the enable to be mirrored');
    await other.drain(pool.name, 'a');
    await until(ownDrained, 2000, 'the drain to be mirrored again');

    await redis.stop();
    assert.deepEqual([...(await granted(stores, pool, 20))], ['b'], 'on the own view, a stays drained');
    assert.equal(stores.current(), stores.fallback);
  });

  test('without a mirror, the own view knows only what was made here', async () => {
    const redis = await privateRedis();
    const { pool } = poolSetup([{ id: 'a' }, { id: 'b' }]);
    const keyPrefix = uniquePrefix();
    const stores = live(new RedisStore(redis.url, { keyPrefix }), { drainMirrorIntervalMs: 0 });
    const other = new RedisStore(redis.url, { keyPrefix });
    cleanups.push(() => other.close());
    await granted(stores, pool, 1);
    await other.drain(pool.name, 'a');
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal((await stateOf(stores.fallback, pool, 'a')).drained, false, 'the control: the mirror is what copies it');
  });
});
