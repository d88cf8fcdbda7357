/**
 * MemoryStore: the shared contract, plus exact timing with an injected clock (which RedisStore cannot
 * have, since it reads Redis TIME); both stores share the window rules these pin down.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryStore } from '../../shared/store/memory-store.ts';
import type { AcquireInput, PoolLayout } from '../../shared/store/types.ts';
import { defineStoreSuite, granted, pool, quotaGranted, quotaRefused, refused } from '../helpers/store-suite.ts';

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

  test('while drained nothing is forgotten (no expiry, as the Redis hash); enabled, the old circuit is; a reset is remembered a day', async () => {
    const layout = pool('p', 'least-requests', [{ id: 'a' }]);
    const { store, at } = setup(layout);
    at(0);
    await store.openCircuit('p', 'a', 1000);
    await store.drain('p', 'a');
    at(3 * 86_400_000);
    const [drained] = await store.snapshot(layout);
    assert.deepEqual([drained?.drained, drained?.circuit], [true, 'half-open']);
    await store.enable('p', 'a');
    const [enabled] = await store.snapshot(layout);
    assert.deepEqual([enabled?.drained, enabled?.circuit], [false, 'closed'], 'the half-open memory had run out');

    await store.reset('p', 'a');
    at(4 * 86_400_000 - 1);
    assert.equal((await store.snapshot(layout))[0]?.resetAt, 3 * 86_400_000 + 1_000_000);
    at(4 * 86_400_000);
    assert.equal((await store.snapshot(layout))[0]?.resetAt, 0);
  });

  test('an observed request deficit sits in its bucket: acquire waits exactly for it to leave the short window', async () => {
    // rpm 12: 2 per short window (100 ms), 12 per window.
    const layout = pool('p', 'least-requests', [{ id: 'a', rpm: 12 }]);
    const { store, at, attempt } = setup(layout);
    at(5);
    const lease = granted(await store.acquire(attempt()));
    assert.equal(lease.bucket, 100_000);
    at(25);
    await store.release(lease, undefined, { rpm: 12, remainingRequests: 0 }); // one request we did not know of, in bucket 2
    assert.deepEqual(refused(await store.acquire(attempt())), { ok: false, reason: 'no-budget', retryAfterMs: 75 });
    at(99);
    refused(await store.acquire(attempt()));
    at(100);
    granted(await store.acquire(attempt()));
    assert.deepEqual(
      refused(await store.acquire(attempt())),
      { ok: false, reason: 'no-budget', retryAfterMs: 20 },
      'the deficit leaves at 120',
    );
    at(120);
    granted(await store.acquire(attempt()));
  });

  test('a token observation is spread over the window it happened in, and never lowers usage', async () => {
    const layout = pool('p', 'least-requests', [{ id: 'a', tpm: 1000 }]);
    const { store, at, attempt } = setup(layout);
    at(0);
    const lease = granted(await store.acquire(attempt(300)));
    at(300);
    // 200 more than ours, spread over buckets -29..30: 4 each on the 20 oldest, 3 each on the 40 others.
    await store.release(lease, 300, { tpm: 1000, remainingTokens: 500 });
    assert.equal((await store.snapshot(layout))[0]?.tokensInWindow, 500);
    at(600); // ours (bucket 0) left, and the missed usage of buckets -29..0: 20 × 4 + 10 × 3
    assert.equal((await store.snapshot(layout))[0]?.tokensInWindow, 90);
    await store.release(lease, undefined, { tpm: 1000, remainingTokens: 950 });
    assert.equal((await store.snapshot(layout))[0]?.tokensInWindow, 90, 'a lower figure is never ours to take');
    at(900);
    assert.equal((await store.snapshot(layout))[0]?.tokensInWindow, 0);
  });

  test('quota windows: rpm over the whole window only, exact retryAfterMs, tokens reported first', async () => {
    const { store, at } = setup(pool('p', 'least-requests', []));
    const quota = { subject: 'team', tpm: 1000, rpm: 3 };
    at(0);
    assert.equal(quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 600 })).lease.bucket, 100_000);
    at(100);
    quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 300 }));
    at(200);
    const last = quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 100 }));
    assert.deepEqual([last.remainingTokens, last.remainingRequests], [0, 0]);
    at(250);
    assert.deepEqual(quotaRefused(await store.acquireQuota({ ...quota, estimatedTokens: 0 })), {
      ok: false,
      reason: 'requests',
      retryAfterMs: 350,
      remainingTokens: 0,
      remainingRequests: 0,
    });
    assert.equal(quotaRefused(await store.acquireQuota({ ...quota, estimatedTokens: 1 })).reason, 'tokens', 'both short: tokens');
    assert.equal(quotaRefused(await store.acquireQuota({ ...quota, estimatedTokens: 700 })).retryAfterMs, 450, 'the 300 must go too');
    at(599);
    quotaRefused(await store.acquireQuota({ ...quota, estimatedTokens: 0 }));
    at(600);
    const again = quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 600 }));
    assert.deepEqual([again.remainingTokens, again.remainingRequests], [0, 0]);
  });

  test('a queue ticket dies exactly at its deadline; a queued poll hints at room for its request', async () => {
    const layout = pool('p', 'least-requests', [{ id: 'a', tpm: 100 }]);
    const { store, at, attempt } = setup(layout);
    const wait = (ticket: string, ttlMs: number): AcquireInput => ({ ...attempt(100), queue: { ticket, ttlMs } });
    at(0);
    granted(await store.acquire(attempt(100)));
    assert.equal(refused(await store.acquire(wait('A', 100))).reason, 'no-budget');
    at(50);
    assert.deepEqual(refused(await store.acquire(wait('B', 1000))), { ok: false, reason: 'queued', retryAfterMs: 550 });
    at(99);
    assert.equal(refused(await store.acquire(wait('B', 1000))).reason, 'queued');
    at(100);
    assert.deepEqual(refused(await store.acquire(wait('B', 1000))), { ok: false, reason: 'no-budget', retryAfterMs: 500 });
    assert.equal(refused(await store.acquire(wait('A', 100))).reason, 'queued', 'A came back behind B');
    at(605);
    assert.deepEqual(
      refused(await store.acquire(wait('A', 100))),
      { ok: false, reason: 'queued', retryAfterMs: 5 },
      "room now is the head's: next bucket edge",
    );
    granted(await store.acquire(wait('B', 1000)));
    assert.equal(refused(await store.acquire(wait('A', 100))).reason, 'no-budget');
  });

  test('background work: reduced request limits exact to the bucket (rpm 7, reserve 0.3: 1 per short window, 4 per window)', async () => {
    const layout = pool('p', 'least-requests', [{ id: 'a', rpm: 7 }]);
    const { store, at, attempt } = setup(layout);
    const background = (): AcquireInput => ({ ...attempt(), background: { reserve: 0.3 } });
    at(0);
    granted(await store.acquire(background()));
    assert.deepEqual(refused(await store.acquire(background())), { ok: false, reason: 'no-budget', retryAfterMs: 100 });
    granted(await store.acquire(attempt())); // interactive: 2 per short window
    for (const ms of [100, 200]) {
      at(ms);
      granted(await store.acquire(background()));
    }
    at(300);
    // 4 requests in the window, whoever sent them: background waits for bucket 0's two to leave at 600.
    assert.deepEqual(refused(await store.acquire(background())), { ok: false, reason: 'no-budget', retryAfterMs: 300 });
    granted(await store.acquire(attempt())); // interactive: 7 per window
    at(599);
    refused(await store.acquire(background()));
    at(600);
    granted(await store.acquire(background()));
  });

  test('slow start: the share grows linearly from 0.1; a slow candidate stays exactly when its draw is below it', async () => {
    const layout = pool('p', 'least-requests', [{ id: 'a' }, { id: 'b' }]);
    const draws: number[] = [];
    let now = START;
    let counter = 0;
    const store = new MemoryStore({
      windowMs: 600,
      now: () => now,
      random: () => {
        const value = draws.shift();
        assert.ok(value !== undefined, 'a draw more than expected');
        return value;
      },
    });
    /** One acquire (released at once) with these draws: the slow-start ones first, then the strategy's two (0: the first of a tie). */
    const pick = async (slowDraws: number[], extra: Partial<AcquireInput> = {}): Promise<string> => {
      draws.push(...slowDraws, 0, 0);
      const lease = granted(
        await store.acquire({ pool: layout, leaseId: `l${++counter}`, leaseMs: 1000, estimatedTokens: 0, slowStartMs: 600, ...extra }),
      );
      await store.release(lease);
      assert.equal(draws.length, 0, 'every draw used');
      return lease.deploymentId;
    };
    await store.openCircuit('p', 'a', 0);
    await store.closeCircuit('p', 'a');
    assert.equal((await store.snapshot(layout))[0]?.slowStartSince, START);
    for (const [ms, share] of [
      [0, 0.1],
      [300, 0.55],
      [540, 0.91],
    ] as const) {
      now = START + ms;
      assert.equal(await pick([share - 1e-9]), 'a', `kept below ${share} at ${ms} ms`);
      assert.equal(await pick([share + 1e-9]), 'b', `dropped at ${share} at ${ms} ms`);
    }
    now = START + 300;
    assert.equal(await pick([], { exclude: ['b'] }), 'a', 'the only candidate: no draw, never dropped');
    assert.equal(await pick([], { slowStartMs: 0 }), 'a', 'slow start off: no draw');
    now = START + 600;
    assert.equal(await pick([]), 'a', 'the ramp is over: no draw');
    now = START + 600_000 - 1;
    assert.equal((await store.snapshot(layout))[0]?.slowStartSince, START);
    now = START + 600_000;
    assert.equal((await store.snapshot(layout))[0]?.slowStartSince, 0, 'remembered 10 minutes');
  });

  test('windowMs must split into whole-millisecond buckets', () => {
    assert.throws(() => new MemoryStore({ windowMs: 1000 }), /multiple of 60/);
    assert.throws(() => new MemoryStore({ windowMs: 0 }), /multiple of 60/);
  });
});
