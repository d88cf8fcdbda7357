/**
 * RedisStore under real concurrency: many clients (as many gateway instances would) race for one
 * pool, and the atomic scripts must still keep every budget and balance exactly.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { RedisStore } from '../shared/store/redis-store.ts';
import type { AcquireResult, PoolLayout } from '../shared/store/types.ts';
import { countBy, pool, uniquePrefix } from './helpers/store-suite.ts';

const redisUrl = process.env.REDIS_URL;
if (!redisUrl) throw new Error('REDIS_URL is not set: run through `npm test` or set it to a Redis the tests may write to');

const INSTANCES = 8;

describe('RedisStore with 8 clients racing', () => {
  const keyPrefix = uniquePrefix();
  const stores = Array.from({ length: INSTANCES }, () => new RedisStore(redisUrl, { keyPrefix, windowMs: 60_000 }));
  before(async () => {
    await Promise.all(stores.map((store) => store.ping()));
  });
  after(async () => {
    await Promise.all(stores.map((store) => store.close()));
  });

  /** `perInstance` acquires from every store at once. */
  function race(layout: PoolLayout, perInstance: number, estimatedTokens: number): Promise<AcquireResult[]> {
    return Promise.all(
      stores.flatMap((store) =>
        Array.from({ length: perInstance }, () => store.acquire({ pool: layout, leaseId: randomUUID(), leaseMs: 30_000, estimatedTokens })),
      ),
    );
  }

  test('token budgets hold exactly: never more granted than tpm', async () => {
    const layout = pool('race-tpm', 'least-requests', [
      { id: 'a', tpm: 10_000 },
      { id: 'b', tpm: 10_000 },
      { id: 'c', tpm: 5_000 },
    ]);
    const results = await race(layout, 50, 100); // 400 × 100 tokens against 25 000
    const leases = results.flatMap((r) => (r.ok ? [r.lease] : []));
    assert.equal(leases.length, 250);
    const tokensBy = new Map<string, number>();
    for (const lease of leases) tokensBy.set(lease.deploymentId, (tokensBy.get(lease.deploymentId) ?? 0) + lease.tokens);
    assert.deepEqual(Object.fromEntries(tokensBy), { a: 10_000, b: 10_000, c: 5_000 });
    assert.ok(results.every((r) => r.ok || r.reason === 'no-budget'));
    const snapshot = await stores[0]!.snapshot(layout);
    assert.deepEqual(
      snapshot.map((d) => d.tokensInWindow),
      [10_000, 10_000, 5_000],
    );
  });

  test('least-requests keeps in-flight within 1 of each other at every step', async () => {
    const layout = pool('race-balance', 'least-requests', [{ id: 'a' }, { id: 'b' }, { id: 'c' }, { id: 'd' }, { id: 'e' }]);
    for (let round = 0; round < 4; round++) {
      const results = await race(layout, 7, 0);
      assert.ok(results.every((r) => r.ok));
      const inFlight = (await stores[round]!.snapshot(layout)).map((d) => d.inFlight);
      const held = (round + 1) * INSTANCES * 7;
      assert.equal(
        inFlight.reduce((sum, n) => sum + n, 0),
        held,
      );
      assert.ok(Math.max(...inFlight) - Math.min(...inFlight) <= 1, `round ${round}: ${inFlight}`);
    }
  });

  test('1-rpm budgets grant exactly one request each', async () => {
    const layout = pool('race-rpm', 'random', [
      { id: 'a', rpm: 1 },
      { id: 'b', rpm: 1 },
      { id: 'c', rpm: 1 },
    ]);
    const results = await race(layout, 10, 0);
    const chosen = countBy(results.flatMap((r) => (r.ok ? [r.lease.deploymentId] : [])));
    assert.deepEqual(Object.fromEntries(chosen), { a: 1, b: 1, c: 1 });
    for (const r of results) if (!r.ok) assert.equal(r.reason, 'no-budget');
  });

  test('a half-open circuit lets exactly one probe through cluster-wide', async () => {
    const layout = pool('race-probe', 'least-requests', [{ id: 'a' }]);
    await stores[0]!.openCircuit('race-probe', 'a', 0);
    const results = await race(layout, 5, 0);
    const probes = results.filter((r) => r.ok);
    assert.equal(probes.length, 1);
    assert.ok(probes[0]?.ok && probes[0].lease.probe);
  });

  test('round-robin stays fair across instances acquiring at once', async () => {
    const layout = pool('race-rr', 'round-robin', [{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
    const results = await race(layout, 30, 0); // 240 picks
    const chosen = countBy(results.flatMap((r) => (r.ok ? [r.lease.deploymentId] : [])));
    assert.deepEqual(Object.fromEntries(chosen), { a: 80, b: 80, c: 80 });
  });
});
