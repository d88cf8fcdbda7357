/**
 * MemoryStore: the shared contract, plus exact timing with an injected clock (which RedisStore cannot
 * have, since it reads Redis TIME); both stores share the window rules these pin down.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryStore } from '../shared/store/memory-store.ts';
import type { AcquireInput, PoolLayout } from '../shared/store/types.ts';
import { defineStoreSuite, granted, pool, refused } from './helpers/store-suite.ts';

defineStoreSuite('MemoryStore', (options, instances) => {
  const store = new MemoryStore(options);
  return Array.from({ length: instances }, () => store);
});

describe('MemoryStore with a fake clock (windowMs 600: 10 ms buckets, 100 ms short window)', () => {
  const START = 1_000_000; // a bucket edge
  function setup(layout: PoolLayout): { store: MemoryStore; at: (ms: number) => void; attempt: (tokens?: number) => AcquireInput } {
    let now = START;
    let counter = 0;
    const store = new MemoryStore({ windowMs: 600, now: () => now });
    return {
      store,
      at: (ms) => {
        now = START + ms;
      },
      attempt: (tokens = 0) => ({ pool: layout, leaseId: `l${++counter}`, leaseMs: 60_000, estimatedTokens: tokens }),
    };
  }

  test('tokens leave the window exactly 60 buckets after the bucket they were booked in', async () => {
    const { store, at, attempt } = setup(pool('p', 'least-requests', [{ id: 'a', tpm: 1000 }]));
    at(5);
    assert.equal(granted(await store.acquire(attempt(600))).bucket, 100_000);
    at(105);
    assert.equal(granted(await store.acquire(attempt(400))).bucket, 100_010);
    at(200);
    const full = refused(await store.acquire(attempt(500)));
    assert.deepEqual(full, { ok: false, reason: 'no-budget', retryAfterMs: 400 });
    at(599);
    refused(await store.acquire(attempt(500)));
    at(600);
    granted(await store.acquire(attempt(500)));
    at(650);
    assert.equal(refused(await store.acquire(attempt(101))).retryAfterMs, 50, 'the 400 leaves at 700');
    at(700);
    granted(await store.acquire(attempt(101)));
  });

  test('the short request window frees at its bucket edge; the long one at the window edge', async () => {
    // rpm 7: 2 per short window, 7 per window.
    const { store, at, attempt } = setup(pool('p', 'least-requests', [{ id: 'a', rpm: 7 }]));
    at(3);
    granted(await store.acquire(attempt()));
    granted(await store.acquire(attempt()));
    const short = refused(await store.acquire(attempt()));
    assert.deepEqual(short, { ok: false, reason: 'no-budget', retryAfterMs: 97 });
    at(99);
    refused(await store.acquire(attempt()));
    for (const ms of [100, 100, 200, 200, 300]) {
      at(ms);
      granted(await store.acquire(attempt()));
    }
    at(300);
    // 7 in the window now; the first two (bucket 0) leave at 600.
    assert.equal(refused(await store.acquire(attempt())).retryAfterMs, 300);
    at(599);
    refused(await store.acquire(attempt()));
    at(600);
    granted(await store.acquire(attempt()));
  });

  test('retryAfterMs is the later of a cooldown end and the budget freeing, the soonest over deployments', async () => {
    const { store, at, attempt } = setup(
      pool('p', 'least-requests', [
        { id: 'a', tpm: 100 },
        { id: 'b', tpm: 100 },
      ]),
    );
    at(0);
    granted(await store.acquire({ ...attempt(100), exclude: ['b'] }));
    granted(await store.acquire({ ...attempt(100), exclude: ['a'] }));
    assert.equal(await store.cooldown('p', 'a', 100), START + 100);
    at(50);
    await store.cooldown('p', 'b', 900);
    // a: cooldown ends at 100 but its tokens leave at 600; b: budget at 600 but cooldown to 950.
    assert.deepEqual(refused(await store.acquire(attempt(100))), { ok: false, reason: 'unavailable', retryAfterMs: 550 });
    at(150);
    // a is out of cooldown and lacks only budget now.
    assert.deepEqual(refused(await store.acquire(attempt(50))), { ok: false, reason: 'no-budget', retryAfterMs: 450 });
  });

  test('a gap longer than the window resets it; a lease booked before that cannot be reconciled into it', async () => {
    const { store, at, attempt } = setup(pool('p', 'least-requests', [{ id: 'a', tpm: 1000 }]));
    const layout = pool('p', 'least-requests', [{ id: 'a', tpm: 1000 }]);
    at(0);
    const old = granted(await store.acquire(attempt(1000)));
    at(10_000);
    const [snapshot] = await store.snapshot(layout);
    assert.equal(snapshot?.tokensInWindow, 0);
    await store.release(old, 5000);
    assert.equal((await store.snapshot(layout))[0]?.tokensInWindow, 0);
    granted(await store.acquire(attempt(1000)));
  });

  test('leases die exactly at their deadline', async () => {
    const { store, at } = setup(pool('p', 'least-requests', [{ id: 'a' }]));
    const layout = pool('p', 'least-requests', [{ id: 'a' }]);
    at(0);
    granted(await store.acquire({ pool: layout, leaseId: 'x', leaseMs: 100, estimatedTokens: 0 }));
    at(99);
    assert.equal((await store.snapshot(layout))[0]?.inFlight, 1);
    at(100);
    assert.equal((await store.snapshot(layout))[0]?.inFlight, 0);
  });

  test('a half-open circuit is forgotten a day after its open period when nobody probes it', async () => {
    const { store, at } = setup(pool('p', 'least-requests', [{ id: 'a' }]));
    const layout = pool('p', 'least-requests', [{ id: 'a' }]);
    at(0);
    await store.openCircuit('p', 'a', 1000);
    at(1000 + 86_400_000 - 1);
    assert.equal((await store.snapshot(layout))[0]?.circuit, 'half-open');
    at(1000 + 86_400_000);
    assert.equal((await store.snapshot(layout))[0]?.circuit, 'closed');
  });

  test('windowMs must split into whole-millisecond buckets', () => {
    assert.throws(() => new MemoryStore({ windowMs: 1000 }), /multiple of 60/);
    assert.throws(() => new MemoryStore({ windowMs: 0 }), /multiple of 60/);
  });
});
