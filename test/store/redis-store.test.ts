/**
 * RedisStore: the shared contract against a real Redis, plus what only Redis has: key layout and
 * TTLs, script caching, and failing fast when Redis goes away.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { createStore } from '../../shared/store/index.ts';
import { KeyLayout } from '../../shared/store/keys.ts';
import { RedisStore } from '../../shared/store/redis-store.ts';
import { startRedisServer } from '../helpers/redis-server.ts';
import { defineStoreSuite, granted, pool, quotaGranted, readsForOneTick, refused, uniquePrefix } from '../helpers/store-suite.ts';

const redisUrl = process.env.REDIS_URL;
if (!redisUrl) throw new Error('REDIS_URL is not set: run through `npm test` or set it to a Redis the tests may write to');

defineStoreSuite('RedisStore', (options, instances) => Array.from({ length: instances }, () => new RedisStore(redisUrl, options)));

describe('RedisStore specifics', () => {
  // Connected in before(): a run that filters out every test skips the hooks, and a client made at
  // collection time would keep the process alive.
  let admin: Redis;
  before(() => {
    admin = new Redis(redisUrl);
  });
  after(() => admin?.disconnect());

  test('every key of a pool sits under its hash tag and expires when idle', async () => {
    const keyPrefix = uniquePrefix();
    const store = new RedisStore(admin, { keyPrefix, windowMs: 1200 });
    const layout = pool('gpt-4o', 'round-robin', [{ id: 'east:us', tpm: 1000 }, { id: 'west' }]);
    const lease = granted(await store.acquire({ pool: layout, leaseId: 'l1', leaseMs: 5000, estimatedTokens: 10 }));
    await store.release(lease, 20);
    granted(await store.acquire({ pool: layout, leaseId: 'l2', leaseMs: 5000, estimatedTokens: 10 }));
    await store.cooldown('gpt-4o', 'west', 3000);
    await store.openCircuit('gpt-4o', 'east:us', 1000);

    const keys = (await admin.keys(`${keyPrefix}*`)).sort();
    assert.deepEqual(keys, [
      `${keyPrefix}{pool:gpt-4o}:dep:east%3Aus`, // its only lease was released: no leases key
      `${keyPrefix}{pool:gpt-4o}:dep:east%3Aus:win`,
      `${keyPrefix}{pool:gpt-4o}:dep:west`,
      `${keyPrefix}{pool:gpt-4o}:dep:west:leases`,
      `${keyPrefix}{pool:gpt-4o}:dep:west:win`,
      `${keyPrefix}{pool:gpt-4o}:inflight`,
      `${keyPrefix}{pool:gpt-4o}:rr`,
      `${keyPrefix}{pool:gpt-4o}:states`,
    ]);
    const ttls = Object.fromEntries(await Promise.all(keys.map(async (key) => [key.slice(keyPrefix.length), await admin.pttl(key)])));
    assert.ok(ttls['{pool:gpt-4o}:rr'] > 0 && ttls['{pool:gpt-4o}:rr'] <= 2400, 'cursor: two windows');
    for (const id of ['east%3Aus', 'west']) {
      const ttl = ttls[`{pool:gpt-4o}:dep:${id}:win`];
      assert.ok(ttl > 0 && ttl <= 2400, `window of ${id}: two windows`);
    }
    assert.ok(ttls['{pool:gpt-4o}:dep:west:leases'] > 0 && ttls['{pool:gpt-4o}:dep:west:leases'] <= 5000, 'leases: latest deadline');
    assert.ok(ttls['{pool:gpt-4o}:inflight'] > 0 && ttls['{pool:gpt-4o}:inflight'] <= 5000, 'in-flight counts: latest deadline');
    const inflight = await admin.hgetall(`${keyPrefix}{pool:gpt-4o}:inflight`);
    const westLeases = `${keyPrefix}{pool:gpt-4o}:dep:west:leases`;
    assert.deepEqual(Object.keys(inflight).sort(), [westLeases, `${westLeases}|next`], 'only west holds a lease');
    assert.equal(inflight[westLeases], '1');
    assert.equal(inflight[`${westLeases}|next`], await admin.zscore(westLeases, 'l2'), 'next: its earliest deadline');
    assert.ok(ttls['{pool:gpt-4o}:dep:west'] > 0 && ttls['{pool:gpt-4o}:dep:west'] <= 3000, 'state: cooldown end');
    const day = 86_400_000;
    assert.ok(ttls['{pool:gpt-4o}:dep:east%3Aus'] > day && ttls['{pool:gpt-4o}:dep:east%3Aus'] <= day + 1000, 'state: half-open memory');
    const states = `${keyPrefix}{pool:gpt-4o}:states`;
    assert.deepEqual(
      Object.keys(await admin.hgetall(states)).sort(),
      [`${keyPrefix}{pool:gpt-4o}:dep:east%3Aus`, `${keyPrefix}{pool:gpt-4o}:dep:west`],
      'the state index names both state hashes',
    );
    assert.ok(Math.abs(ttls['{pool:gpt-4o}:states'] - ttls['{pool:gpt-4o}:dep:east%3Aus']) <= 5, 'state index: its longest entry');

    await store.closeCircuit('gpt-4o', 'east:us');
    const closed = `${keyPrefix}{pool:gpt-4o}:dep:east%3Aus`;
    assert.deepEqual(await admin.hkeys(closed), ['ss'], 'only the slow start that began is left');
    const slowStartTtl = await admin.pttl(closed);
    assert.ok(slowStartTtl > 599_000 && slowStartTtl <= 600_000, `kept while a slow start may run: ${slowStartTtl}`);
    await store.reset('gpt-4o', 'east:us');
    await admin.hdel(closed, 'rs');
    await store.closeCircuit('gpt-4o', 'east:us');
    assert.equal(await admin.exists(closed), 0, 'nothing left to remember (a closed circuit starts no slow start)');
    await store.close();
    assert.equal(admin.status, 'ready', 'a shared client is not closed by the store');
  });

  test('queue keys sit under the pool hash tag, quota windows under the client tag, and both expire', async () => {
    const keyPrefix = uniquePrefix();
    const store = new RedisStore(admin, { keyPrefix, windowMs: 1200 });
    const layout = pool('gpt-4o', 'least-requests', [{ id: 'a', tpm: 100 }]);
    granted(await store.acquire({ pool: layout, leaseId: 'l1', leaseMs: 500, estimatedTokens: 100 }));
    const queue = { ticket: 'w:1', ttlMs: 5000 };
    refused(await store.acquire({ pool: layout, leaseId: 'l2', leaseMs: 500, estimatedTokens: 100, queue }));
    refused(
      await store.acquire({ pool: layout, leaseId: 'l3', leaseMs: 500, estimatedTokens: 100, queue: { ticket: 'w:2', ttlMs: 3000 } }),
    );
    quotaGranted(await store.acquireQuota({ subject: 'team:a', tpm: 10, estimatedTokens: 5 }));

    const keys = (await admin.keys(`${keyPrefix}*`)).sort();
    assert.deepEqual(keys, [
      `${keyPrefix}{client:team%3Aa}:win`,
      `${keyPrefix}{pool:gpt-4o}:dep:a:leases`,
      `${keyPrefix}{pool:gpt-4o}:dep:a:win`,
      `${keyPrefix}{pool:gpt-4o}:inflight`,
      `${keyPrefix}{pool:gpt-4o}:queue`,
      `${keyPrefix}{pool:gpt-4o}:queue:deadlines`,
    ]);
    const order = `${keyPrefix}{pool:gpt-4o}:queue`;
    const deadlines = `${keyPrefix}{pool:gpt-4o}:queue:deadlines`;
    assert.deepEqual(await admin.zrange(order, 0, -1), ['w:1', 'w:2']);
    const [timeSeconds, timeMicros] = await admin.time();
    const nowMs = Number(timeSeconds) * 1000 + Math.floor(Number(timeMicros) / 1000);
    const [, firstEnqueued] = await admin.zrange(order, 0, 0, 'WITHSCORES');
    assert.ok(Math.abs(Number(firstEnqueued) / 1000 - nowMs) < 1000, `enqueue time in µs: ${firstEnqueued}`);
    const deadline = Number(await admin.zscore(deadlines, 'w:1'));
    assert.ok(deadline > nowMs + 4000 && deadline <= nowMs + 5000, `deadline ${deadline}`);
    for (const key of [order, deadlines]) {
      const ttl = await admin.pttl(key);
      assert.ok(ttl > 4000 && ttl <= 5000, `${key}: the latest deadline (${ttl})`);
    }
    const clientTtl = await admin.pttl(`${keyPrefix}{client:team%3Aa}:win`);
    assert.ok(clientTtl > 0 && clientTtl <= 2400, 'quota window: two windows');

    await store.leaveQueue('gpt-4o', 'w:1');
    await store.leaveQueue('gpt-4o', 'w:2');
    assert.equal(await admin.exists(order, deadlines), 0, 'an empty queue leaves no keys');
  });

  test('a drained deployment’s state hash has no expiry until enabled; a reset is remembered a day', async () => {
    const keyPrefix = uniquePrefix();
    const store = new RedisStore(admin, { keyPrefix });
    const state = `${keyPrefix}{pool:gpt-4o}:dep:east%3Aus`;
    await store.cooldown('gpt-4o', 'east:us', 3000);
    assert.equal(await store.drain('gpt-4o', 'east:us'), true);
    assert.equal(await admin.pttl(state), -1, 'drained: no expiry');
    await store.openCircuit('gpt-4o', 'east:us', 1000);
    await store.cooldown('gpt-4o', 'east:us', 10);
    assert.equal(await admin.pttl(state), -1, 'other writes keep it without expiry');
    assert.ok(Number(await admin.hget(state, 'dr')) > 0, 'dr holds when it was drained');
    await store.closeCircuit('gpt-4o', 'east:us');
    await admin.hdel(state, 'ss'); // the slow start that began would keep the hash 10 minutes
    assert.equal(await store.enable('gpt-4o', 'east:us'), true);
    const ttl = await admin.pttl(state);
    assert.ok(ttl > 0 && ttl <= 3000, `enabled: the cooldown end again (${ttl})`);

    await store.reset('gpt-4o', 'east:us');
    const day = 86_400_000;
    const resetTtl = await admin.pttl(state);
    assert.ok(resetTtl > day - 1000 && resetTtl <= day, `the reset is remembered a day (${resetTtl})`);
    assert.deepEqual(await admin.hkeys(state), ['rs'], 'nothing else is left');
    await store.close();
  });

  test('slow start keeps the state hash while it may run; a plain reset forgets it, a probe’s reset begins one', async () => {
    const keyPrefix = uniquePrefix();
    const store = new RedisStore(admin, { keyPrefix });
    const state = new KeyLayout(keyPrefix).deployment('gpt-4o', 'a').state;
    const until = await store.cooldown('gpt-4o', 'a', 5000, { slowStart: true });
    assert.equal(Number(await admin.hget(state, 'ss')), until, 'ss: the cooldown end');
    const ttl = await admin.pttl(state);
    assert.ok(ttl > 604_000 && ttl <= 605_000, `kept until the cooldown end + 10 minutes (${ttl})`);
    await store.reset('gpt-4o', 'a');
    assert.deepEqual(await admin.hkeys(state), ['rs'], 'a plain reset: no slow start left');
    await store.reset('gpt-4o', 'a', { slowStart: true });
    assert.deepEqual((await admin.hkeys(state)).sort(), ['rs', 'ss']);
    assert.equal(await admin.hget(state, 'ss'), await admin.hget(state, 'rs'), 'the slow start begins at the reset');
    await store.close();
  });

  test('slow start half-way (began 5 of 10 minutes ago): kept with probability 0.55, independent of the strategy’s draw', async () => {
    const keyPrefix = uniquePrefix();
    const store = new RedisStore(admin, { keyPrefix });
    const layout = pool('ramp', 'random', [{ id: 'a' }, { id: 'b' }]);
    const [seconds, micros] = await admin.time();
    const nowMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    const keys = new KeyLayout(keyPrefix);
    const state = keys.deployment('ramp', 'a').state;
    await admin.hset(state, 'ss', nowMs - 300_000);
    // Written by hand, so indexed by hand: acquire reads only the state hashes the pool's index names.
    await admin.hset(keys.states('ramp'), state, nowMs + 300_000);
    let hits = 0;
    const count = 1000;
    for (let i = 0; i < count; i++) {
      const lease = granted(
        await store.acquire({ pool: layout, leaseId: `l${i}`, leaseMs: 5000, estimatedTokens: 0, slowStartMs: 600_000 }),
      );
      if (lease.deploymentId === 'a') hits += 1;
      await store.release(lease);
    }
    // 0.55 × 0.5 = 0.275 (σ ≈ 0.014); a draw shared with the strategy's would make it 0.5.
    assert.ok(hits / count >= 0.22 && hits / count <= 0.33, `a's share ${hits / count}`);
    await store.close();
  });

  test('the lazy choice (one window read, a pick that cannot take the request picked again) chooses as among the eligible ones', async () => {
    const store = new RedisStore(admin, { keyPrefix: uniquePrefix(), windowMs: 60_000 });
    const picks = 600;
    /** Where `picks` requests of 100 tokens go (each released at once); a's tpm of 10 never fits one. */
    async function spread(strategy: 'random' | 'weighted' | 'least-requests', weights: number[]): Promise<Record<string, number>> {
      const layout = pool(`lazy-${strategy}`, strategy, [
        { id: 'a', tpm: 10, weight: weights[0] },
        { id: 'b', tpm: 1_000_000_000, weight: weights[1] },
        { id: 'c', weight: weights[2] },
        { id: 'd', rpm: 1_000_000, weight: weights[3] },
      ]);
      const counts: Record<string, number> = { a: 0, b: 0, c: 0, d: 0 };
      for (let i = 0; i < picks; i++) {
        const lease = granted(await store.acquire({ pool: layout, leaseId: `l${i}`, leaseMs: 5000, estimatedTokens: 100 }));
        counts[lease.deploymentId] = (counts[lease.deploymentId] ?? 0) + 1;
        await store.release(lease);
      }
      return counts;
    }
    const within = (count: number | undefined, expected: number, share = 0.2) => Math.abs((count ?? 0) - expected) <= share * expected;
    for (const strategy of ['random', 'least-requests'] as const) {
      const counts = await spread(strategy, [1, 1, 1, 1]);
      assert.equal(counts.a, 0, `${strategy}: never the deployment without room`);
      // A third each (σ ≈ 12 of 200): re-picking the first of the rest after a's refusal would give b half.
      for (const id of ['b', 'c', 'd']) assert.ok(within(counts[id], picks / 3), `${strategy}: ${JSON.stringify(counts)}`);
    }
    const weighted = await spread('weighted', [10, 1, 1, 2]);
    assert.equal(weighted.a, 0);
    // b and c expect 150 each (σ ≈ 10.6): ±30 % is about 4σ, so the check does not fail by chance.
    assert.ok(
      within(weighted.b, picks / 4, 0.3) && within(weighted.c, picks / 4, 0.3) && within(weighted.d, picks / 2),
      JSON.stringify(weighted),
    );
    await store.close();
  });

  test('a pool mostly without room: after a few lazy picks that cannot take it, the full evaluation chooses evenly among the rest', async () => {
    const store = new RedisStore(admin, { keyPrefix: uniquePrefix(), windowMs: 60_000 });
    const picks = 400;
    for (const strategy of ['random', 'least-requests', 'weighted'] as const) {
      // 10 deployments whose tpm of 10 never fits 100 tokens, then two that do: most calls pick a full one
      // three times over and end in the full evaluation.
      const full = Array.from({ length: 10 }, (_, i) => ({ id: `full-${i}`, tpm: 10 }));
      const layout = pool(`mostly-full-${strategy}`, strategy, [...full, { id: 'x', tpm: 1_000_000_000 }, { id: 'y' }]);
      const counts: Record<string, number> = {};
      for (let i = 0; i < picks; i++) {
        const lease = granted(await store.acquire({ pool: layout, leaseId: `l${i}`, leaseMs: 5000, estimatedTokens: 100 }));
        counts[lease.deploymentId] = (counts[lease.deploymentId] ?? 0) + 1;
        await store.release(lease);
      }
      assert.deepEqual(Object.keys(counts).sort(), ['x', 'y'], `${strategy}: only the deployments with room`);
      // Half each (σ = 10 of 200).
      assert.ok(Math.abs((counts.x ?? 0) - picks / 2) <= 50, `${strategy}: ${JSON.stringify(counts)}`);
    }
    await store.close();
  });

  test('lease buckets follow the Redis TIME clock', async () => {
    const store = new RedisStore(admin, { keyPrefix: uniquePrefix(), windowMs: 60_000 });
    const [seconds] = await admin.time();
    const lease = granted(
      await store.acquire({ pool: pool('time', 'random', [{ id: 'a' }]), leaseId: 'l', leaseMs: 1000, estimatedTokens: 0 }),
    );
    assert.ok(Math.abs(lease.bucket - Number(seconds)) <= 1, `bucket ${lease.bucket} is the Redis second ${seconds}`);
  });

  test('scripts survive SCRIPT FLUSH (EVALSHA falls back to EVAL)', async () => {
    const store = new RedisStore(admin, { keyPrefix: uniquePrefix() });
    const layout = pool('flush', 'least-requests', [{ id: 'a' }]);
    granted(await store.acquire({ pool: layout, leaseId: 'l1', leaseMs: 1000, estimatedTokens: 0 }));
    await admin.script('FLUSH');
    granted(await store.acquire({ pool: layout, leaseId: 'l2', leaseMs: 1000, estimatedTokens: 0 }));
  });

  test('calls made in one tick reach Redis in one write, each with its own answer', async () => {
    // A Redis of its own: its read counter then counts this store's writes alone.
    const server = await startRedisServer();
    const store = createStore({ redisUrl: server.url, keyPrefix: uniquePrefix() });
    const stats = new Redis(server.url);
    try {
      const [reads] = await readsForOneTick(store, [pool('one-write', 'least-requests', [{ id: 'a' }, { id: 'b' }])], 10, [stats]);
      assert.ok(reads! >= 1 && reads! <= 2, `10 acquires in ${reads} reads`);
    } finally {
      stats.disconnect();
      await store.close();
      await server.stop();
    }
  });

  test('when Redis goes away, calls reject quickly and ping says false', async () => {
    const server = await startRedisServer();
    const store = createStore({ redisUrl: server.url, keyPrefix: uniquePrefix() });
    try {
      const layout = pool('down', 'least-requests', [{ id: 'a' }]);
      granted(await store.acquire({ pool: layout, leaseId: 'l1', leaseMs: 1000, estimatedTokens: 0 }));
      assert.equal(await store.ping(), true);
      await server.stop();

      const started = performance.now();
      await assert.rejects(store.acquire({ pool: layout, leaseId: 'l2', leaseMs: 1000, estimatedTokens: 0 }));
      await assert.rejects(store.cooldown('down', 'a', 1000));
      assert.ok(performance.now() - started < 5000, 'failed fast instead of hanging');
      assert.equal(await store.ping(), false);
    } finally {
      await store.close();
      await server.stop();
    }
  });
});
