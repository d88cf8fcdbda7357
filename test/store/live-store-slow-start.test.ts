/**
 * LiveStore passes the slow-start options through: to the shared store and to this instance's own view
 * while Redis answers, and, made while Redis is frozen, held in the own view and replayed with their
 * option when it answers.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { MemoryStore } from '../../shared/store/memory-store.ts';
import { RedisStore } from '../../shared/store/redis-store.ts';
import type { Store } from '../../shared/store/types.ts';
import { Metrics } from '../../gateway/metrics.ts';
import type { Pool } from '../../gateway/pools.ts';
import { LiveStore } from '../../gateway/routing/live-store.ts';
import { poolSetup, quietLogger, redisStore } from '../helpers/collaborators.ts';
import { until } from '../helpers/fixtures.ts';
import { startRedisServer } from '../helpers/redis-server.ts';
import { uniquePrefix } from '../helpers/store-suite.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function live(shared: Store): LiveStore {
  const stores = new LiveStore(shared, new MemoryStore(), new Metrics(false), quietLogger(), { drainMirrorIntervalMs: 0 });
  cleanups.push(
    () => shared.close(),
    () => stores.close(),
  );
  return stores;
}

async function slowStartSince(store: Store, pool: Pool, id: string): Promise<number> {
  const found = (await store.snapshot(pool.layout)).find((d) => d.id === id);
  assert.ok(found, `no deployment ${id} in the snapshot`);
  return found.slowStartSince;
}

describe('LiveStore: slow start', () => {
  test('reset and cooldown with slowStart reach the shared store and the own view; a plain reset clears it in both', async () => {
    const { pool } = poolSetup([{ id: 'a' }, { id: 'b' }]);
    const stores = live(redisStore());
    const before = Date.now();
    await stores.reset(pool.name, 'a', { slowStart: true });
    const until = await stores.cooldown(pool.name, 'b', 30_000, { slowStart: true });
    for (const store of [stores.shared, stores.fallback]) {
      assert.ok((await slowStartSince(store, pool, 'a')) >= before - 1000, 'a ramps from the reset');
      assert.ok(Math.abs((await slowStartSince(store, pool, 'b')) - until) < 1000, 'b ramps from its cooldown end');
    }
    await stores.reset(pool.name, 'a');
    for (const store of [stores.shared, stores.fallback]) assert.equal(await slowStartSince(store, pool, 'a'), 0);
  });

  test('made while Redis is frozen, they are replayed with their option when it answers', async () => {
    const redis = await startRedisServer();
    cleanups.push(async () => {
      if (redis.process.signalCode === null && redis.process.exitCode === null) redis.process.kill('SIGCONT');
      await redis.stop();
    });
    const { pool } = poolSetup([{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
    const stores = live(new RedisStore(redis.url, { keyPrefix: uniquePrefix() }));
    await stores.reset(pool.name, 'c', { slowStart: true }); // in Redis before the freeze
    redis.process.kill('SIGSTOP');
    // The first call finds Redis frozen (its command timeout); every call after it goes to the own view at once.
    await stores.snapshot(pool.layout);
    assert.equal(stores.current(), stores.fallback);
    await stores.reset(pool.name, 'a', { slowStart: true });
    await stores.cooldown(pool.name, 'b', 60_000, { slowStart: true });
    await stores.reset(pool.name, 'c');
    assert.ok((await slowStartSince(stores.fallback, pool, 'a')) > 0, 'held in the own view');

    redis.process.kill('SIGCONT');
    await until(() => stores.current() === stores.shared, 5000, 'the store circuit to close');
    assert.ok((await slowStartSince(stores.shared, pool, 'a')) > 0, 'the reset reached Redis with its slow start');
    const b = (await stores.shared.snapshot(pool.layout)).find((d) => d.id === 'b');
    assert.ok(
      b && b.cooldownUntil > 0 && b.slowStartSince === b.cooldownUntil,
      `the cooldown came with its slow start: ${JSON.stringify(b)}`,
    );
    assert.equal(await slowStartSince(stores.shared, pool, 'c'), 0, 'the plain reset cleared it in Redis');
  });
});
