/**
 * The one contract both stores keep (shared/store/types.ts), run against each of them. Every test gets
 * a fresh key prefix, so tests never see each other's state even on one Redis.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, test } from 'node:test';
import type { Redis } from 'ioredis';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import type {
  AcquireInput,
  AcquireResult,
  DeploymentBudget,
  Lease,
  PoolLayout,
  QuotaResult,
  Store,
  StoreOptions,
  Strategy,
} from '../../shared/store/types.ts';
import { readsProcessed } from './redis-server.ts';

/**
 * Opens `instances` stores over one fresh state: separate clients sharing one Redis for RedisStore,
 * the same object for MemoryStore (one process is all it serves).
 */
export type OpenStores = (options: StoreOptions, instances: number) => Store[];

export function pool(name: string, strategy: Strategy, deployments: Array<Partial<DeploymentBudget> & { id: string }>): PoolLayout {
  return { name, strategy, deployments: deployments.map((d) => ({ priority: 1, weight: 1, ...d })) };
}

export function granted(result: AcquireResult): Lease {
  assert.ok(result.ok, `expected a lease, got ${JSON.stringify(result)}`);
  return result.lease;
}

/**
 * `perPool` acquires on each of `layouts` (least-requests over deployments a and b), all made in one
 * tick, after one acquire and release per pool (connections up, each script known to its Redis: the
 * first call on a connection sends EVAL). Checks that every call got its own answer and that
 * least-requests saw each acquire before the next; returns how many reads each of `counters` (a
 * Redis, or each master of a cluster) processed for the burst.
 */
export async function readsForOneTick(store: Store, layouts: PoolLayout[], perPool: number, counters: Redis[]): Promise<number[]> {
  const acquire = (layout: PoolLayout, leaseId: string) => store.acquire({ pool: layout, leaseId, leaseMs: 5000, estimatedTokens: 0 });
  for (const layout of layouts) await store.release(granted(await acquire(layout, 'first')));
  const before = await Promise.all(counters.map(readsProcessed));
  const ids = Array.from({ length: perPool }, (_, i) => `l${i}`);
  const leases = (await Promise.all(layouts.flatMap((layout) => ids.map((id) => acquire(layout, id))))).map(granted);
  const after = await Promise.all(counters.map(readsProcessed));
  for (const layout of layouts) {
    const own = leases.filter((lease) => lease.pool === layout.name);
    assert.deepEqual(
      own.map((lease) => lease.leaseId),
      ids,
    );
    const on = (id: string) => own.filter((lease) => lease.deploymentId === id).length;
    assert.deepEqual([on('a'), on('b')], [perPool / 2, perPool / 2], `${layout.name}: least-requests saw each acquire before the next`);
  }
  // The second INFO's own read counts too.
  return after.map((count, index) => count - before[index]! - 1);
}

export function refused(result: AcquireResult): { reason: string; retryAfterMs: number } {
  assert.ok(!result.ok, `expected a refusal, got ${JSON.stringify(result)}`);
  return result;
}

export function quotaGranted(result: QuotaResult): Extract<QuotaResult, { ok: true }> {
  assert.ok(result.ok, `expected a quota booking, got ${JSON.stringify(result)}`);
  return result;
}

export function quotaRefused(result: QuotaResult): Extract<QuotaResult, { ok: false }> {
  assert.ok(!result.ok, `expected a quota refusal, got ${JSON.stringify(result)}`);
  return result;
}

export function countBy<T>(items: readonly T[]): Map<T, number> {
  const counts = new Map<T, number>();
  for (const item of items) counts.set(item, (counts.get(item) ?? 0) + 1);
  return counts;
}

/**
 * Waits as a client told `retryAfterMs` would. Node measures a timer from the event loop's cached time,
 * which may lag the clock by a millisecond, so a bare setTimeout can fire a hair before the moment.
 */
export function honour(retryAfterMs: number): Promise<void> {
  return sleep(retryAfterMs + 2);
}

export function uniquePrefix(): string {
  return `test:${randomUUID()}:`;
}

export function defineStoreSuite(name: string, openStores: OpenStores): void {
  describe(`store contract: ${name}`, () => {
    const opened: Store[] = [];

    afterEach(async () => {
      await Promise.all(opened.splice(0).map((store) => store.close()));
    });

    function open(options: Omit<StoreOptions, 'keyPrefix'> = {}, instances = 1): Store[] {
      const stores = openStores({ ...options, keyPrefix: uniquePrefix() }, instances);
      opened.push(...stores);
      return stores;
    }

    function openOne(options: Omit<StoreOptions, 'keyPrefix'> = {}): Store {
      const [store] = open(options, 1);
      assert.ok(store);
      return store;
    }

    let leaseCounter = 0;
    function attempt(layout: PoolLayout, extra: Partial<AcquireInput> = {}): AcquireInput {
      leaseCounter += 1;
      return { pool: layout, leaseId: `lease-${leaseCounter}-${randomUUID()}`, leaseMs: 30_000, estimatedTokens: 0, ...extra };
    }

    /** Acquires (and optionally releases at once) `count` times, in parallel batches to keep Redis runs short. */
    async function picks(
      store: Store,
      layout: PoolLayout,
      count: number,
      releaseEach = false,
      extra: Partial<AcquireInput> = {},
    ): Promise<string[]> {
      const chosen: string[] = [];
      const batch = releaseEach ? 1 : 100;
      for (let done = 0; done < count; done += batch) {
        const results = await Promise.all(
          Array.from({ length: Math.min(batch, count - done) }, () => store.acquire(attempt(layout, extra))),
        );
        for (const result of results) {
          const lease = granted(result);
          chosen.push(lease.deploymentId);
          if (releaseEach) await store.release(lease);
        }
      }
      return chosen;
    }

    /** Holds `count` leases on `deploymentId` by excluding every other deployment. */
    async function load(store: Store, layout: PoolLayout, deploymentId: string, count: number, leaseMs = 30_000): Promise<Lease[]> {
      const exclude = layout.deployments.map((d) => d.id).filter((id) => id !== deploymentId);
      const leases: Lease[] = [];
      for (let i = 0; i < count; i++) {
        const lease = granted(await store.acquire(attempt(layout, { exclude, leaseMs })));
        assert.equal(lease.deploymentId, deploymentId);
        leases.push(lease);
      }
      return leases;
    }

    async function inFlight(store: Store, layout: PoolLayout): Promise<Record<string, number>> {
      const snapshot = await store.snapshot(layout);
      return Object.fromEntries(snapshot.map((d) => [d.id, d.inFlight]));
    }

    describe('strategies', () => {
      test('least-requests picks the deployment with fewest live leases, ties at random', async () => {
        const store = openOne();
        const layout = pool('lr', 'least-requests', [{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
        await load(store, layout, 'a', 2);
        await load(store, layout, 'c', 1);
        assert.equal(granted(await store.acquire(attempt(layout))).deploymentId, 'b');
        // Now a:2 b:1 c:1 — b and c tie; both must come up over repeated acquire+release.
        const chosen = countBy(await picks(store, layout, 40, true));
        assert.equal(chosen.get('a'), undefined);
        assert.ok((chosen.get('b') ?? 0) > 0 && (chosen.get('c') ?? 0) > 0, `ties broken at random: ${[...chosen]}`);
      });

      test('round-robin rotates in config order across instances sharing the state', async () => {
        const [first, second] = open({}, 2);
        assert.ok(first && second);
        const layout = pool('rr', 'round-robin', [{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
        const order: string[] = [];
        for (let i = 0; i < 9; i++) {
          const store = i % 2 === 0 ? first : second;
          order.push(granted(await store.acquire(attempt(layout))).deploymentId);
        }
        assert.deepEqual(order, ['a', 'b', 'c', 'a', 'b', 'c', 'a', 'b', 'c']);
      });

      test('round-robin rotates over the eligible deployments only', async () => {
        const store = openOne();
        const layout = pool('rr-eligible', 'round-robin', [{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
        await store.cooldown('rr-eligible', 'b', 30_000);
        const order: string[] = [];
        for (let i = 0; i < 4; i++) order.push(granted(await store.acquire(attempt(layout))).deploymentId);
        assert.deepEqual(order, ['a', 'c', 'a', 'c']);
      });

      test('random spreads uniformly', async () => {
        const store = openOne();
        const layout = pool('random', 'random', [{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
        const chosen = countBy(await picks(store, layout, 900));
        // Expected 300 each; σ ≈ 14, so ±80 fails only when the choice is biased.
        for (const id of ['a', 'b', 'c']) assert.ok(Math.abs((chosen.get(id) ?? 0) - 300) <= 80, `${id}: ${chosen.get(id)}`);
      });

      test('power-of-two never picks the busiest and favours the least busy', async () => {
        const store = openOne();
        const layout = pool('p2c', 'power-of-two', [{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
        await load(store, layout, 'b', 1);
        await load(store, layout, 'c', 2);
        const chosen = countBy(await picks(store, layout, 150, true));
        assert.equal(chosen.get('c'), undefined, 'the busiest loses every pairing');
        // a wins 2 of the 3 pairings, b only against c.
        assert.ok((chosen.get('a') ?? 0) > (chosen.get('b') ?? 0), `a should dominate: ${[...chosen]}`);
        assert.ok((chosen.get('b') ?? 0) > 0, 'b wins its pairing with c');
      });

      test('weighted picks in proportion to weight', async () => {
        const store = openOne();
        const layout = pool('weighted', 'weighted', [
          { id: 'a', weight: 1 },
          { id: 'b', weight: 2 },
          { id: 'c', weight: 3 },
          { id: 'never', weight: 0 },
        ]);
        const chosen = countBy(await picks(store, layout, 3000));
        // Expected 500 / 1000 / 1500 with σ ≈ 20 / 26 / 27: ±100 is about 4σ.
        assert.ok(Math.abs((chosen.get('a') ?? 0) - 500) <= 100, `a: ${chosen.get('a')}`);
        assert.ok(Math.abs((chosen.get('b') ?? 0) - 1000) <= 100, `b: ${chosen.get('b')}`);
        assert.ok(Math.abs((chosen.get('c') ?? 0) - 1500) <= 100, `c: ${chosen.get('c')}`);
        assert.equal(chosen.get('never'), undefined);
      });
    });

    describe('eligibility', () => {
      test('the best priority tier takes everything while any of it is eligible; spill-over only then', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('tiers', 'least-requests', [
          { id: 'a', priority: 1, tpm: 100 },
          { id: 'b', priority: 1, tpm: 100 },
          { id: 'spill', priority: 2 },
        ]);
        const firstTier = await picks(store, layout, 10, true);
        assert.ok(
          firstTier.every((id) => id !== 'spill'),
          `spill used while tier 1 was eligible: ${firstTier}`,
        );
        assert.equal(granted(await store.acquire(attempt(layout, { exclude: ['a', 'b'] }))).deploymentId, 'spill');

        await store.cooldown('tiers', 'a', 30_000);
        assert.equal(granted(await store.acquire(attempt(layout))).deploymentId, 'b', 'one eligible in tier 1 still takes it');
        await store.cooldown('tiers', 'b', 30_000);
        assert.equal(granted(await store.acquire(attempt(layout))).deploymentId, 'spill');

        // Budget: a fresh pool whose tier 1 is spent goes to tier 2.
        const budgeted = pool('tiers-budget', 'least-requests', [
          { id: 'a', priority: 1, tpm: 100 },
          { id: 'spill', priority: 5 },
        ]);
        assert.equal(granted(await store.acquire(attempt(budgeted, { estimatedTokens: 100 }))).deploymentId, 'a');
        assert.equal(granted(await store.acquire(attempt(budgeted, { estimatedTokens: 1 }))).deploymentId, 'spill');
      });

      test('excluded deployments are never chosen; excluding all is unavailable', async () => {
        const store = openOne({ windowMs: 600 });
        const layout = pool('exclude', 'random', [{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
        for (let i = 0; i < 30; i++) {
          assert.notEqual(granted(await store.acquire(attempt(layout, { exclude: ['a'] }))).deploymentId, 'a');
        }
        const none = refused(await store.acquire(attempt(layout, { exclude: ['a', 'b', 'c'] })));
        assert.equal(none.reason, 'unavailable');
        assert.equal(none.retryAfterMs, 600, 'nothing can ever take it: one window');
      });

      test('cooldown takes a deployment out, never shortens, and sets retryAfterMs to the soonest end', async () => {
        const store = openOne();
        const layout = pool('cool', 'least-requests', [{ id: 'a' }, { id: 'b' }]);
        const long = await store.cooldown('cool', 'a', 5000);
        const kept = await store.cooldown('cool', 'a', 100);
        assert.equal(kept, long, 'a shorter cooldown does not shorten a longer one');
        assert.ok(Math.abs(long - 5000 - Date.now()) < 1000, 'until is epoch ms');
        for (let i = 0; i < 5; i++) assert.equal(granted(await store.acquire(attempt(layout))).deploymentId, 'b');

        const started = performance.now();
        await store.cooldown('cool', 'b', 200);
        const none = refused(await store.acquire(attempt(layout)));
        const elapsed = performance.now() - started;
        assert.equal(none.reason, 'unavailable');
        assert.ok(none.retryAfterMs <= 200 && none.retryAfterMs >= 200 - elapsed - 2, `retryAfterMs ${none.retryAfterMs}`);

        const [snapshotA] = await store.snapshot(layout);
        assert.equal(snapshotA?.cooldownUntil, long);
        await honour(none.retryAfterMs);
        assert.equal(granted(await store.acquire(attempt(layout))).deploymentId, 'b', 'b is back once its cooldown ends');
      });

      test('circuit: open excludes, half-open lets exactly one probe through, close restores', async () => {
        const store = openOne();
        const layout = pool('circuit', 'least-requests', [{ id: 'a' }]);
        // Generous times: every step that must land inside one of them is a single store call.
        const leaseMs = 300;

        await store.openCircuit('circuit', 'a', 200);
        const open = refused(await store.acquire(attempt(layout, { leaseMs })));
        assert.equal(open.reason, 'unavailable');
        assert.ok(open.retryAfterMs <= 200, `retryAfterMs ${open.retryAfterMs}`);
        assert.equal((await store.snapshot(layout))[0]?.circuit, 'open');

        await honour(open.retryAfterMs);
        const [halfOpen] = await store.snapshot(layout);
        assert.equal(halfOpen?.circuit, 'half-open');
        assert.ok((halfOpen?.circuitOpenUntil ?? 0) > 0);

        const probe = granted(await store.acquire(attempt(layout, { leaseMs })));
        assert.equal(probe.probe, true);
        const busy = refused(await store.acquire(attempt(layout, { leaseMs })));
        assert.equal(busy.reason, 'unavailable', 'one probe at a time');
        assert.ok(busy.retryAfterMs <= leaseMs, 'the probe marker lasts a lease');

        await store.release(probe);
        assert.equal((await store.snapshot(layout))[0]?.circuit, 'half-open', 'releasing a probe does not close the circuit');
        const secondProbe = granted(await store.acquire(attempt(layout, { leaseMs })));
        assert.equal(secondProbe.probe, true);

        // A probe whose holder vanished: its marker expires with the lease.
        await sleep(leaseMs + 20);
        const thirdProbe = granted(await store.acquire(attempt(layout, { leaseMs })));
        assert.equal(thirdProbe.probe, true);

        // Re-opening forgets the probe in flight: once open again ends, a new probe may go.
        await store.openCircuit('circuit', 'a', 150);
        assert.equal(refused(await store.acquire(attempt(layout, { leaseMs }))).reason, 'unavailable');
        await sleep(170);
        assert.equal(granted(await store.acquire(attempt(layout, { leaseMs }))).probe, true);

        await store.closeCircuit('circuit', 'a');
        const [closed] = await store.snapshot(layout);
        assert.equal(closed?.circuit, 'closed');
        assert.equal(closed?.circuitOpenUntil, 0);
        const normal = granted(await store.acquire(attempt(layout, { leaseMs })));
        assert.equal(normal.probe, false);
        assert.equal(granted(await store.acquire(attempt(layout, { leaseMs }))).probe, false);
      });

      test('an open circuit sends traffic to the others', async () => {
        const store = openOne();
        const layout = pool('circuit-spread', 'round-robin', [{ id: 'a' }, { id: 'b' }]);
        await store.openCircuit('circuit-spread', 'a', 30_000);
        const chosen = await picks(store, layout, 6, true);
        assert.deepEqual(chosen, ['b', 'b', 'b', 'b', 'b', 'b']);
      });
    });

    describe('budgets', () => {
      test('tpm admits exactly up to the token', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('tpm', 'least-requests', [{ id: 'a', tpm: 1000 }]);
        const first = granted(await store.acquire(attempt(layout, { estimatedTokens: 600 })));
        assert.equal(first.tokens, 600);
        granted(await store.acquire(attempt(layout, { estimatedTokens: 400 })));
        const full = refused(await store.acquire(attempt(layout, { estimatedTokens: 1 })));
        assert.equal(full.reason, 'no-budget');
        assert.ok(full.retryAfterMs > 0 && full.retryAfterMs <= 60_000, `retryAfterMs ${full.retryAfterMs}`);
        granted(await store.acquire(attempt(layout, { estimatedTokens: 0 })));
      });

      test('an estimate above tpm can never fit: no-budget, retry after a window', async () => {
        const store = openOne({ windowMs: 6000 });
        const layout = pool('too-big', 'least-requests', [{ id: 'a', tpm: 1000 }]);
        const never = refused(await store.acquire(attempt(layout, { estimatedTokens: 1001 })));
        assert.deepEqual(never, { ok: false, reason: 'no-budget', retryAfterMs: 6000 });
      });

      test('rpm also holds per sixth of the window: rpm 12 admits 2 per short window', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('rpm', 'least-requests', [{ id: 'a', rpm: 12 }]);
        granted(await store.acquire(attempt(layout)));
        granted(await store.acquire(attempt(layout)));
        const full = refused(await store.acquire(attempt(layout)));
        assert.equal(full.reason, 'no-budget');
        assert.ok(full.retryAfterMs > 8000 && full.retryAfterMs <= 10_000, `short window (10 s) frees first: ${full.retryAfterMs}`);
      });

      test('no-budget wins over unavailable when some deployment lacks only budget', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('mixed', 'least-requests', [{ id: 'a', tpm: 100 }, { id: 'b' }]);
        await store.cooldown('mixed', 'b', 2000);
        const full = refused(await store.acquire(attempt(layout, { estimatedTokens: 500 })));
        assert.equal(full.reason, 'no-budget');
        assert.ok(full.retryAfterMs <= 2000 && full.retryAfterMs > 1500, 'the cooldown end is sooner than never');
      });

      test('usage leaves the window bucket by bucket, and all of it after a long gap', async () => {
        const store = openOne({ windowMs: 900 });
        const layout = pool('slide', 'least-requests', [{ id: 'a', tpm: 1000, rpm: 600 }]);
        const usage = async (): Promise<[number, number]> => {
          const [a] = await store.snapshot(layout);
          return [a?.tokensInWindow ?? -1, a?.requestsInWindow ?? -1];
        };
        granted(await store.acquire(attempt(layout, { estimatedTokens: 100 })));
        await sleep(450);
        granted(await store.acquire(attempt(layout, { estimatedTokens: 50 })));
        assert.deepEqual(await usage(), [150, 2]);
        await sleep(550); // the first booking has left, the second not yet
        assert.deepEqual(await usage(), [50, 1]);
        await sleep(1000); // longer than a window since the last booking
        assert.deepEqual(await usage(), [0, 0]);
        granted(await store.acquire(attempt(layout, { estimatedTokens: 1000 })));
        assert.deepEqual(await usage(), [1000, 1]);
      });

      test('honouring retryAfterMs for tokens succeeds', async () => {
        const store = openOne({ windowMs: 600 });
        const layout = pool('tpm-retry', 'least-requests', [{ id: 'a', tpm: 1000 }]);
        const first = granted(await store.acquire(attempt(layout, { estimatedTokens: 600 })));
        await sleep(300);
        const second = granted(await store.acquire(attempt(layout, { estimatedTokens: 400 })));
        assert.ok(second.bucket > first.bucket);
        const full = refused(await store.acquire(attempt(layout, { estimatedTokens: 500 })));
        assert.equal(full.reason, 'no-budget');
        assert.ok(full.retryAfterMs <= 300, `only the first booking must leave: ${full.retryAfterMs}`);
        await honour(full.retryAfterMs);
        const third = granted(await store.acquire(attempt(layout, { estimatedTokens: 500 })));
        assert.ok(third.bucket >= first.bucket + 60, 'admitted once the 600 left the window');
        const [snapshot] = await store.snapshot(layout);
        assert.equal(snapshot?.tokensInWindow, 900);
      });

      test('honouring retryAfterMs for requests succeeds, and requests never exceed rpm in any window', async () => {
        // rpm 7 → 2 per short window (10 buckets) and 7 per window (60 buckets); buckets are 10 ms.
        const store = openOne({ windowMs: 600 });
        const layout = pool('rpm-retry', 'least-requests', [{ id: 'a', rpm: 7 }]);
        const buckets: number[] = [];
        let refusals = 0;
        for (let i = 0; i < 40 && buckets.length < 10; i++) {
          const result = await store.acquire(attempt(layout));
          if (result.ok) {
            buckets.push(result.lease.bucket);
            continue;
          }
          refusals += 1;
          assert.equal(result.reason, 'no-budget');
          await honour(result.retryAfterMs);
          // Right after waiting as told, the request fits.
          buckets.push(granted(await store.acquire(attempt(layout))).bucket);
        }
        assert.equal(buckets.length, 10);
        assert.ok(refusals >= 4, 'the budgets did refuse');
        for (const bucket of buckets) {
          const inWindow = buckets.filter((b) => b > bucket - 60 && b <= bucket).length;
          const inShort = buckets.filter((b) => b > bucket - 10 && b <= bucket).length;
          assert.ok(inWindow <= 7, `${inWindow} requests in the window ending at ${bucket}`);
          assert.ok(inShort <= 2, `${inShort} requests in the short window ending at ${bucket}`);
        }
      });
    });

    describe('leases', () => {
      test('release with the real charge reconciles the window both ways, never below zero', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('charge', 'least-requests', [{ id: 'a', tpm: 1000 }]);
        const big = granted(await store.acquire(attempt(layout, { estimatedTokens: 800 })));
        await store.release(big, 300);
        assert.equal((await store.snapshot(layout))[0]?.tokensInWindow, 300);
        const fill = granted(await store.acquire(attempt(layout, { estimatedTokens: 700 })));
        assert.equal(refused(await store.acquire(attempt(layout, { estimatedTokens: 1 }))).reason, 'no-budget');
        await store.release(fill, 0);
        assert.equal((await store.snapshot(layout))[0]?.tokensInWindow, 300);

        const small = granted(await store.acquire(attempt(layout, { estimatedTokens: 100 })));
        await store.release(small, 600);
        assert.equal((await store.snapshot(layout))[0]?.tokensInWindow, 900, 'charged more consumes more');
        refused(await store.acquire(attempt(layout, { estimatedTokens: 200 })));
        granted(await store.acquire(attempt(layout, { estimatedTokens: 100 })));

        const otherLayout = pool('charge-floor', 'least-requests', [{ id: 'a', tpm: 1000 }]);
        const lease = granted(await store.acquire(attempt(otherLayout, { estimatedTokens: 500 })));
        await store.release({ ...lease, tokens: 900 }, 0);
        const [floor] = await store.snapshot(otherLayout);
        assert.equal(floor?.tokensInWindow, 0, 'never negative');
        assert.equal(floor?.requestsInWindow, 1, 'the request still counts');
        granted(await store.acquire(attempt(otherLayout, { estimatedTokens: 1000 })));
      });

      test('release without a charge keeps the reservation; release is idempotent', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('idempotent', 'least-requests', [{ id: 'a' }]);
        const kept = granted(await store.acquire(attempt(layout, { estimatedTokens: 250 })));
        await store.release(kept);
        const lease = granted(await store.acquire(attempt(layout, { estimatedTokens: 500 })));
        await load(store, layout, 'a', 1);
        assert.equal((await store.snapshot(layout))[0]?.inFlight, 2);
        await store.release(lease, 100);
        await store.release(lease, 900);
        await store.release(lease);
        const [after] = await store.snapshot(layout);
        assert.equal(after?.inFlight, 1, 'the other lease is untouched');
        assert.equal(after?.tokensInWindow, 250 + 100);
      });

      test('withdraw takes a lease out with its whole booking, tokens and request, short window too; once only', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('withdrawn', 'least-requests', [{ id: 'a', tpm: 1000, rpm: 12 }]);
        const kept = granted(await store.acquire(attempt(layout, { estimatedTokens: 300 })));
        const unused = granted(await store.acquire(attempt(layout, { estimatedTokens: 400 })));
        // rpm 12: 2 per short window, both taken now.
        assert.equal(refused(await store.acquire(attempt(layout))).reason, 'no-budget');
        await store.withdraw(unused);
        await store.withdraw(unused);
        await store.release(unused, 900);
        const [after] = await store.snapshot(layout);
        assert.deepEqual([after?.inFlight, after?.tokensInWindow, after?.requestsInWindow], [1, 300, 1]);
        // The short window has room again for exactly the one request withdrawn.
        granted(await store.acquire(attempt(layout, { estimatedTokens: 100 })));
        assert.equal(refused(await store.acquire(attempt(layout))).reason, 'no-budget');
        await store.release(kept);
      });

      test('leases expire without release (a dead instance) and acquire reaps them', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('reap', 'least-requests', [{ id: 'a' }, { id: 'b' }]);
        const dead = await load(store, layout, 'a', 3, 300);
        await load(store, layout, 'b', 1);
        assert.deepEqual(await inFlight(store, layout), { a: 3, b: 1 });
        await sleep(320);
        assert.equal(granted(await store.acquire(attempt(layout))).deploymentId, 'a', 'a counted 0 after reaping');
        assert.deepEqual(await inFlight(store, layout), { a: 1, b: 1 });
        // Releasing a reaped lease changes nothing, not even with a charge.
        const tokensBefore = (await store.snapshot(layout))[0]?.tokensInWindow;
        await store.release(dead[0] as Lease, 5000);
        const [a] = await store.snapshot(layout);
        assert.equal(a?.inFlight, 1);
        assert.equal(a?.tokensInWindow, tokensBefore);
      });

      test('renew keeps leases alive past their first deadline, in any pools, and does not revive dead ones', async () => {
        const store = openOne();
        const first = pool('renew-1', 'least-requests', [{ id: 'a' }]);
        const second = pool('renew-2', 'least-requests', [{ id: 'x' }, { id: 'y' }]);
        const kept = [
          granted(await store.acquire(attempt(first, { leaseMs: 300 }))),
          granted(await store.acquire(attempt(second, { leaseMs: 300 }))),
          granted(await store.acquire(attempt(second, { leaseMs: 300 }))),
        ];
        const dying = granted(await store.acquire(attempt(first, { leaseMs: 40 })));
        await sleep(100);
        await store.renew([...kept, dying], 600);
        await sleep(300); // past the original 300 ms deadline, within the renewed one
        assert.deepEqual(await inFlight(store, first), { a: 1 });
        assert.deepEqual(await inFlight(store, second), { x: 1, y: 1 });
        await sleep(450);
        assert.deepEqual(await inFlight(store, first), { a: 0 });
        assert.deepEqual(await inFlight(store, second), { x: 0, y: 0 });
      });

      test('renewing a probe keeps other probes out', async () => {
        const store = openOne();
        const layout = pool('renew-probe', 'least-requests', [{ id: 'a' }]);
        await store.openCircuit('renew-probe', 'a', 0);
        const probe = granted(await store.acquire(attempt(layout, { leaseMs: 200 })));
        assert.equal(probe.probe, true);
        await store.renew([probe], 800);
        await sleep(250);
        assert.equal(refused(await store.acquire(attempt(layout))).reason, 'unavailable');
        await store.release(probe);
        assert.equal(granted(await store.acquire(attempt(layout))).probe, true);
      });
    });

    describe('observations (release with the deployment rate-limit headers)', () => {
      async function usage(store: Store, layout: PoolLayout): Promise<[number, number]> {
        const [a] = await store.snapshot(layout);
        return [a?.tokensInWindow ?? -1, a?.requestsInWindow ?? -1];
      }

      /**
       * Usage right after an observation that booked a deficit: the deficit is spread over the window's
       * buckets as past usage, so a bucket edge between the observation and the read lets one share of it
       * leave (`share`: the deficit over the buckets, rounded up; twice that is allowed on a loaded machine).
       */
      async function usageAfterDeficit(store: Store, layout: PoolLayout, expected: [number, number], share: number, what: string) {
        const [tokens, requests] = await usage(store, layout);
        assert.equal(requests, expected[1], `${what}: requests`);
        assert.ok(
          tokens <= expected[0] && tokens >= expected[0] - 2 * share,
          `${what}: ${tokens} tokens, expected ${expected[0]} (less a share or two)`,
        );
      }

      test('a token observation raises usage to tpm − remaining, never lowers it, and clamps silly values', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('observe-tokens', 'least-requests', [{ id: 'a', tpm: 1000 }]);
        const first = granted(await store.acquire(attempt(layout, { estimatedTokens: 100 })));
        await store.release(first, 100, { tpm: 1000, remainingTokens: 700 });
        // 200 missed over 60 buckets: a share of 4 (rounded up).
        await usageAfterDeficit(store, layout, [300, 1], 4, 'others use the deployment too: the 200 we missed are booked');

        const second = granted(await store.acquire(attempt(layout, { estimatedTokens: 100 })));
        await store.release(second, 100, { tpm: 1000, remainingTokens: 950 });
        await usageAfterDeficit(store, layout, [400, 2], 4, 'an observation of less use never lowers ours');
        await store.release(second, undefined, { tpm: 1000, remainingTokens: 1500 });
        await store.release(second, undefined, { remainingTokens: 0 });
        await store.release(second, undefined, { tpm: 1000 });
        await store.release(second, undefined, { tpm: 1000, remainingTokens: Number.NaN });
        await usageAfterDeficit(store, layout, [400, 2], 4, 'above the budget, or half an observation: nothing');

        // The 200 we missed are spread over the window: the oldest bucket's share leaves within a bucket (1 s).
        const full = refused(await store.acquire(attempt(layout, { estimatedTokens: 601 })));
        assert.equal(full.reason, 'no-budget');
        assert.ok(full.retryAfterMs > 0 && full.retryAfterMs <= 1000, `the missed usage leaves as the window slides: ${full.retryAfterMs}`);
        granted(await store.acquire(attempt(layout, { estimatedTokens: 600 })));

        const negative = pool('observe-negative', 'least-requests', [{ id: 'a', tpm: 1000 }]);
        const lease = granted(await store.acquire(attempt(negative, { estimatedTokens: 10 })));
        await store.release(lease, 10, { tpm: 1000, remainingTokens: -50 });
        await usageAfterDeficit(store, negative, [1000, 1], 17, 'a negative remaining counts as none left');
        assert.equal(refused(await store.acquire(attempt(negative, { estimatedTokens: 1 }))).reason, 'no-budget');
      });

      test('a 429 saying no tokens remain and retry after 1 s: the refusal says about a bucket, honoured it admits', async () => {
        // Scaled time: a 6 s window of 100 ms buckets, tpm 6000, so each bucket's share of the window is 100 tokens.
        const store = openOne({ windowMs: 6000 });
        const layout = pool('observe-429', 'least-requests', [{ id: 'a', tpm: 6000 }]);
        const lease = granted(await store.acquire(attempt(layout, { estimatedTokens: 50 })));
        await store.release(lease, undefined, { tpm: 6000, remainingTokens: 0 });
        // 5 950 missed over 60 buckets of 100 ms: a share of 100.
        await usageAfterDeficit(store, layout, [6000, 1], 100, 'the window is full as Azure says');
        const refusal = refused(await store.acquire(attempt(layout, { estimatedTokens: 100 })));
        assert.equal(refusal.reason, 'no-budget');
        assert.ok(refusal.retryAfterMs <= 200, `a bucket or two, not the whole window: ${refusal.retryAfterMs} ms`);
        await honour(refusal.retryAfterMs);
        granted(await store.acquire(attempt(layout, { estimatedTokens: 100 })));
        // What is left of the missed usage still leaves bucket by bucket: a request of half the budget waits about half the window.
        const half = refused(await store.acquire(attempt(layout, { estimatedTokens: 3000 })));
        assert.ok(half.retryAfterMs > 2000 && half.retryAfterMs <= 3500, `half the budget, half the window: ${half.retryAfterMs} ms`);
      });

      test('a request observation books the deficit into the short window, and acquire waits for it', async () => {
        const store = openOne({ windowMs: 60_000 });
        // rpm 60: 10 per short window (10 s), 60 per window.
        const layout = pool('observe-requests', 'least-requests', [{ id: 'a', rpm: 60 }]);
        const started = performance.now();
        const lease = granted(await store.acquire(attempt(layout)));
        await store.release(lease, undefined, { rpm: 60, remainingRequests: 9 });
        await store.release(lease, undefined, { rpm: 60, remainingRequests: 40 });
        assert.deepEqual(await usage(store, layout), [0, 1], 'as we know it, or less: nothing booked');
        await store.release(lease, undefined, { rpm: 60, remainingRequests: 0 });
        assert.deepEqual(await usage(store, layout), [0, 10], 'the deficit counts in the window too');

        const full = refused(await store.acquire(attempt(layout)));
        const elapsed = performance.now() - started;
        assert.equal(full.reason, 'no-budget');
        // Our own request leaves the short window 10 buckets after its bucket; then 9 + 1 fit again.
        assert.ok(full.retryAfterMs <= 10_000 && full.retryAfterMs > 9000 - elapsed, `retryAfterMs ${full.retryAfterMs}`);
      });

      test('an observation applies even when the lease is already gone', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('observe-gone', 'least-requests', [{ id: 'a', tpm: 1000, rpm: 600 }]);
        const lease = granted(await store.acquire(attempt(layout, { estimatedTokens: 100 })));
        await store.release(lease, 100);
        await store.release(lease, 900, { tpm: 1000, remainingTokens: 500, rpm: 600, remainingRequests: 97 });
        // The charge of a lease already ended changes nothing; the observation is still true.
        assert.deepEqual(await usage(store, layout), [500, 3]);
        const never = { ...lease, leaseId: 'never-acquired' };
        await store.release(never, 50, { tpm: 1000, remainingTokens: 100 });
        assert.deepEqual(await usage(store, layout), [900, 3]);
        assert.equal((await store.snapshot(layout))[0]?.inFlight, 0);
      });

      test('observe applies the figures at once and leaves the live lease alone', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('observe-now', 'least-requests', [{ id: 'a', tpm: 1000 }]);
        const lease = granted(await store.acquire(attempt(layout, { estimatedTokens: 100 })));
        await store.observe(layout.name, 'a', { tpm: 1000, remainingTokens: 600 });
        assert.deepEqual(await usage(store, layout), [400, 1]);
        assert.equal((await store.snapshot(layout))[0]?.inFlight, 1, 'the lease is still held');
        await store.release(lease, 100);
        assert.equal((await store.snapshot(layout))[0]?.inFlight, 0);
      });
    });

    describe('operator: drain, enable, reset', () => {
      async function stateOf(store: Store, layout: PoolLayout, id: string) {
        const state = (await store.snapshot(layout)).find((d) => d.id === id);
        assert.ok(state, `no snapshot of ${id}`);
        return state;
      }

      test('drain takes a deployment out for every client until enable; both idempotent; the snapshot says drained', async () => {
        const [first, second] = open({}, 2);
        assert.ok(first && second);
        const layout = pool('drain', 'least-requests', [{ id: 'a' }, { id: 'b' }]);
        assert.equal(await first.drain('drain', 'a'), true, 'in rotation until now');
        assert.equal(await second.drain('drain', 'a'), false, 'drained already: one state');
        assert.deepEqual(
          (await second.snapshot(layout)).map((d) => [d.id, d.drained]),
          [
            ['a', true],
            ['b', false],
          ],
        );
        const chosen = countBy(await picks(second, layout, 20, true));
        assert.deepEqual([...chosen], [['b', 20]], 'nothing on a, from any client');
        assert.equal(refused(await second.acquire(attempt(layout, { exclude: ['b'] }))).reason, 'unavailable');

        assert.equal(await second.enable('drain', 'a'), true);
        assert.equal(await first.enable('drain', 'a'), false, 'enabled already');
        assert.equal((await first.snapshot(layout))[0]?.drained, false);
        await load(first, layout, 'b', 1);
        assert.equal(granted(await second.acquire(attempt(layout))).deploymentId, 'a', 'back: the least busy');
        assert.equal(await first.enable('drain', 'never-drained'), false, 'enabling what was never drained changes nothing');
      });

      test('a drained deployment has no retry time of its own; a pool drained entirely is unavailable, one window, never queued', async () => {
        const store = openOne({ windowMs: 600 });
        const layout = pool('drain-retry', 'least-requests', [{ id: 'a', tpm: 100 }, { id: 'b' }]);
        await store.drain('drain-retry', 'a');
        const started = performance.now();
        await store.cooldown('drain-retry', 'b', 200);
        const cooling = refused(await store.acquire(attempt(layout)));
        const elapsed = performance.now() - started;
        // a has room and no cooldown, but counts for nothing: b's cooldown alone says when.
        assert.equal(cooling.reason, 'unavailable');
        assert.ok(cooling.retryAfterMs <= 200 && cooling.retryAfterMs >= 200 - elapsed - 2, `retryAfterMs ${cooling.retryAfterMs}`);

        await store.drain('drain-retry', 'b');
        assert.deepEqual(await store.acquire(attempt(layout)), { ok: false, reason: 'unavailable', retryAfterMs: 600 });
        const waiter = await store.acquire(attempt(layout, { queue: { ticket: 'X', ttlMs: 30_000 } }));
        assert.deepEqual(waiter, { ok: false, reason: 'unavailable', retryAfterMs: 600 }, 'never servable: refused at once');
        await store.enable('drain-retry', 'a');
        // X did not join the queue: a new waiter is not behind it.
        granted(await store.acquire(attempt(layout, { queue: { ticket: 'Y', ttlMs: 30_000 } })));
      });

      test('requests in flight on a drained deployment renew and release as usual; a half-open circuit sends no probe while drained', async () => {
        const store = openOne();
        const layout = pool('drain-flight', 'least-requests', [{ id: 'a' }]);
        const lease = granted(await store.acquire(attempt(layout, { leaseMs: 300 })));
        assert.equal(await store.drain('drain-flight', 'a'), true);
        await store.renew([lease], 1000);
        await sleep(400); // past the first lease time: only the renewal keeps it
        const during = await stateOf(store, layout, 'a');
        assert.deepEqual([during.inFlight, during.drained], [1, true]);
        await store.release(lease);
        assert.equal((await stateOf(store, layout, 'a')).inFlight, 0);

        await store.openCircuit('drain-flight', 'a', 50);
        await sleep(80);
        assert.equal((await stateOf(store, layout, 'a')).circuit, 'half-open');
        assert.equal(refused(await store.acquire(attempt(layout))).reason, 'unavailable', 'no probe while drained');
        await store.enable('drain-flight', 'a');
        assert.equal(granted(await store.acquire(attempt(layout))).probe, true, 'enabled: its circuit applies as it is, one probe');
      });

      test('drained outlives every cooldown and circuit in the state', async () => {
        const store = openOne();
        const layout = pool('drain-lasts', 'least-requests', [{ id: 'a' }, { id: 'b' }]);
        await store.drain('drain-lasts', 'a');
        await store.cooldown('drain-lasts', 'a', 50);
        await store.openCircuit('drain-lasts', 'a', 50);
        await store.closeCircuit('drain-lasts', 'a');
        await sleep(100);
        const state = await stateOf(store, layout, 'a');
        assert.deepEqual([state.drained, state.cooldownUntil, state.circuit], [true, 0, 'closed']);
        assert.equal(granted(await store.acquire(attempt(layout))).deploymentId, 'b');
      });

      test('reset ends a cooldown, closes a circuit, forgets a probe in flight, keeps drained and records when', async () => {
        const store = openOne();
        const layout = pool('reset', 'least-requests', [{ id: 'a' }, { id: 'b' }]);
        const onA = { exclude: ['b'] };
        assert.equal((await stateOf(store, layout, 'a')).resetAt, 0);

        await store.cooldown('reset', 'a', 30_000);
        const before = Date.now();
        await store.reset('reset', 'a');
        const cooled = await stateOf(store, layout, 'a');
        assert.equal(cooled.cooldownUntil, 0);
        assert.ok(Math.abs(cooled.resetAt - before) < 1000, `resetAt is epoch ms: ${cooled.resetAt}`);
        const first = granted(await store.acquire(attempt(layout, onA)));
        assert.equal(first.probe, false);
        await store.release(first);

        await store.openCircuit('reset', 'a', 30_000);
        await store.reset('reset', 'a');
        const closed = await stateOf(store, layout, 'a');
        assert.deepEqual([closed.circuit, closed.circuitOpenUntil], ['closed', 0]);
        assert.equal(granted(await store.acquire(attempt(layout, onA))).probe, false, 'closed: no probe needed');

        await store.openCircuit('reset', 'a', 50);
        await sleep(80);
        const probe = granted(await store.acquire(attempt(layout, onA)));
        assert.equal(probe.probe, true);
        refused(await store.acquire(attempt(layout, onA)));
        await store.reset('reset', 'a');
        assert.equal(granted(await store.acquire(attempt(layout, onA))).probe, false, 'the probe marker is gone with the circuit');
        await store.release(probe);
        assert.equal((await stateOf(store, layout, 'a')).circuit, 'closed', 'the old probe’s release changes nothing');

        await store.drain('reset', 'a');
        await store.reset('reset', 'a');
        await store.reset('reset', 'a');
        const drained = await stateOf(store, layout, 'a');
        assert.equal(drained.drained, true, 'reset is not enable');
        assert.ok(drained.resetAt >= cooled.resetAt);
      });

      test('a drain racing acquires from several clients: nothing is granted on it once the drain returned', async () => {
        // Four clients acquire; a fifth drains.
        const [drainer, ...stores] = open({}, 5);
        assert.ok(drainer);
        const layout = pool('drain-race', 'least-requests', [{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
        let drainReturned = false;
        let stop = false;
        const before: string[] = [];
        const after: string[] = [];
        const workers = stores.flatMap((store) =>
          [0, 1, 2].map(async () => {
            while (!stop) {
              const issuedAfterDrain = drainReturned;
              const lease = granted(await store.acquire(attempt(layout)));
              (issuedAfterDrain ? after : before).push(lease.deploymentId);
              await store.release(lease);
              // MemoryStore answers within the same turn: let the timers run.
              await nextTurn();
            }
          }),
        );
        await sleep(100);
        assert.equal(await drainer.drain('drain-race', 'a'), true);
        drainReturned = true;
        await sleep(150);
        stop = true;
        await Promise.all(workers);
        assert.ok(before.includes('a'), 'a was being granted until the drain');
        assert.ok(after.length > 20, `acquires went on after the drain (${after.length})`);
        assert.deepEqual(
          after.filter((id) => id === 'a'),
          [],
          'no grant on a after the drain returned',
        );
      });

      test('drains and enables racing from several clients: exactly one of each reports the change', async () => {
        const stores = open({}, 4);
        const drains = await Promise.all(stores.flatMap((store) => [store.drain('drain-once', 'a'), store.drain('drain-once', 'a')]));
        assert.equal(drains.filter(Boolean).length, 1, `drains: ${drains}`);
        const enables = await Promise.all(stores.flatMap((store) => [store.enable('drain-once', 'a'), store.enable('drain-once', 'a')]));
        assert.equal(enables.filter(Boolean).length, 1, `enables: ${enables}`);
      });
    });

    describe('client quotas', () => {
      test('tpm is exact to the token, with the remaining figures', async () => {
        const store = openOne({ windowMs: 60_000 });
        const quota = { subject: 'team-a', tpm: 1000, rpm: 10 };
        const first = quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 600 }));
        assert.deepEqual(first.lease.subject, 'team-a');
        assert.equal(first.lease.tokens, 600);
        assert.deepEqual([first.remainingTokens, first.remainingRequests], [400, 9]);
        const second = quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 400 }));
        assert.deepEqual([second.remainingTokens, second.remainingRequests], [0, 8]);
        const full = quotaRefused(await store.acquireQuota({ ...quota, estimatedTokens: 1 }));
        assert.equal(full.reason, 'tokens');
        assert.deepEqual([full.remainingTokens, full.remainingRequests], [0, 8]);
        assert.ok(full.retryAfterMs > 50_000 && full.retryAfterMs <= 60_000, `retryAfterMs ${full.retryAfterMs}`);
        const free = quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 0 }));
        assert.deepEqual([free.remainingTokens, free.remainingRequests], [0, 7]);

        const unlimited = quotaGranted(await store.acquireQuota({ subject: 'team-free', estimatedTokens: 1_000_000 }));
        assert.ok(!('remainingTokens' in unlimited) && !('remainingRequests' in unlimited), JSON.stringify(unlimited));
      });

      test('rpm is exact to the request over the whole window (no short window for clients)', async () => {
        const store = openOne({ windowMs: 60_000 });
        const quota = { subject: 'team-rpm', rpm: 3, estimatedTokens: 50 };
        const started = performance.now();
        const left: Array<number | undefined> = [];
        for (let i = 0; i < 3; i++) {
          const booked = quotaGranted(await store.acquireQuota(quota));
          assert.ok(!('remainingTokens' in booked));
          left.push(booked.remainingRequests);
        }
        assert.deepEqual(left, [2, 1, 0]);
        const full = quotaRefused(await store.acquireQuota(quota));
        const elapsed = performance.now() - started;
        assert.equal(full.reason, 'requests');
        assert.equal(full.remainingRequests, 0);
        assert.ok(full.retryAfterMs <= 60_000 && full.retryAfterMs > 59_000 - elapsed, `the whole window: ${full.retryAfterMs}`);
      });

      test('an estimate above tpm never fits: tokens, retry after a window', async () => {
        const store = openOne({ windowMs: 6000 });
        const never = await store.acquireQuota({ subject: 'team-big', tpm: 1000, estimatedTokens: 1001 });
        assert.deepEqual(never, { ok: false, reason: 'tokens', retryAfterMs: 6000, remainingTokens: 1000 });
        const both = quotaRefused(await store.acquireQuota({ subject: 'team-none', tpm: 10, rpm: 0, estimatedTokens: 11 }));
        assert.deepEqual(both, { ok: false, reason: 'tokens', retryAfterMs: 6000, remainingTokens: 10, remainingRequests: 0 });
      });

      test('releaseQuota replaces the estimate by the charge; without a charge the booking stays', async () => {
        const store = openOne({ windowMs: 60_000 });
        const quota = { subject: 'team-charge', tpm: 1000 };
        const big = quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 800 })).lease;
        assert.equal(quotaRefused(await store.acquireQuota({ ...quota, estimatedTokens: 201 })).reason, 'tokens');
        await store.releaseQuota(big, 300);
        const fill = quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 700 }));
        assert.equal(fill.remainingTokens, 0, 'the 500 freed were room');
        await store.releaseQuota(fill.lease);
        assert.equal(quotaRefused(await store.acquireQuota({ ...quota, estimatedTokens: 1 })).remainingTokens, 0);
        await store.releaseQuota(fill.lease, 0);
        const after = quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 0 }));
        assert.equal(after.remainingTokens, 700);
        const small = quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 0 })).lease;
        await store.releaseQuota(small, 2000);
        assert.deepEqual(
          quotaRefused(await store.acquireQuota({ ...quota, estimatedTokens: 0 })).remainingTokens,
          0,
          'charged more consumes more',
        );
      });

      test('honouring retryAfterMs for a quota succeeds', async () => {
        const store = openOne({ windowMs: 1200 });
        const quota = { subject: 'team-retry', tpm: 1000, rpm: 2 };
        const first = quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 600 }));
        await sleep(300);
        const second = quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 300 }));
        assert.ok(second.lease.bucket > first.lease.bucket);
        const full = quotaRefused(await store.acquireQuota({ ...quota, estimatedTokens: 50 }));
        assert.equal(full.reason, 'requests', '950 tokens fit, a third request does not');
        assert.ok(full.retryAfterMs <= 900, `only the first booking must leave: ${full.retryAfterMs}`);
        await honour(full.retryAfterMs);
        const third = quotaGranted(await store.acquireQuota({ ...quota, estimatedTokens: 50 }));
        assert.ok(third.lease.bucket >= first.lease.bucket + 60, 'admitted once the first booking left the window');
        assert.deepEqual([third.remainingTokens, third.remainingRequests], [650, 0]);
      });

      test('subjects are independent of each other and of pools', async () => {
        const store = openOne({ windowMs: 60_000 });
        quotaGranted(await store.acquireQuota({ subject: 'team-a', tpm: 100, estimatedTokens: 100 }));
        quotaRefused(await store.acquireQuota({ subject: 'team-a', tpm: 100, estimatedTokens: 1 }));
        assert.equal(quotaGranted(await store.acquireQuota({ subject: 'team-b', tpm: 100, estimatedTokens: 100 })).remainingTokens, 0);
        const layout = pool('team-a', 'least-requests', [{ id: 'team-a', tpm: 100 }]);
        granted(await store.acquire(attempt(layout, { estimatedTokens: 100 })));
      });
    });

    describe('wait queue (first come, first served)', () => {
      /** A pool of one deployment with room for two requests of 500, both held: out of budget. */
      async function fullPool(store: Store, name: string): Promise<{ layout: PoolLayout; held: Lease[] }> {
        const layout = pool(name, 'least-requests', [{ id: 'a', tpm: 1000 }]);
        const held = [
          granted(await store.acquire(attempt(layout, { estimatedTokens: 500 }))),
          granted(await store.acquire(attempt(layout, { estimatedTokens: 500 }))),
        ];
        return { layout, held };
      }

      function waiting(layout: PoolLayout, ticket: string, ttlMs = 30_000, estimatedTokens = 500): AcquireInput {
        return attempt(layout, { estimatedTokens, queue: { ticket, ttlMs } });
      }

      test('waiters are served in arrival order as room frees, across instances', async () => {
        const [first, second] = open({ windowMs: 60_000 }, 2);
        assert.ok(first && second);
        const { layout, held } = await fullPool(first, 'fifo');
        const [heldA, heldB] = held as [Lease, Lease];

        assert.equal(refused(await first.acquire(waiting(layout, 'A'))).reason, 'no-budget', 'the first waiter heads the queue');
        const b = refused(await second.acquire(waiting(layout, 'B')));
        assert.equal(b.reason, 'queued');
        assert.ok(b.retryAfterMs > 50_000 && b.retryAfterMs <= 60_000, `until room for such a request: ${b.retryAfterMs}`);
        assert.equal(refused(await first.acquire(waiting(layout, 'C'))).reason, 'queued');
        assert.equal(refused(await second.acquire(waiting(layout, 'A'))).reason, 'no-budget', 'A keeps its place');

        await first.release(heldA, 0); // room for one
        const bAgain = refused(await second.acquire(waiting(layout, 'B')));
        assert.equal(bAgain.reason, 'queued');
        assert.ok(bAgain.retryAfterMs >= 1 && bAgain.retryAfterMs <= 1000, `room now is the head's: ${bAgain.retryAfterMs}`);
        assert.equal(refused(await first.acquire(waiting(layout, 'C'))).reason, 'queued');
        granted(await second.acquire(waiting(layout, 'A')));

        assert.equal(refused(await second.acquire(waiting(layout, 'C'))).reason, 'queued', 'B is the head now');
        assert.equal(refused(await first.acquire(waiting(layout, 'B'))).reason, 'no-budget');
        await second.release(heldB, 0);
        assert.equal(refused(await first.acquire(waiting(layout, 'C'))).reason, 'queued');
        granted(await second.acquire(waiting(layout, 'B')));
        assert.equal(refused(await first.acquire(waiting(layout, 'C'))).reason, 'no-budget', 'C heads the queue at last');
      });

      test('a waiter whose deadline passed is skipped; coming back, it queues anew', async () => {
        const store = openOne({ windowMs: 60_000 });
        const { layout, held } = await fullPool(store, 'fifo-deadline');
        assert.equal(refused(await store.acquire(waiting(layout, 'A', 250))).reason, 'no-budget');
        assert.equal(refused(await store.acquire(waiting(layout, 'B'))).reason, 'queued');
        await sleep(300); // A stopped polling
        await store.release(held[0] as Lease, 0);
        granted(await store.acquire(waiting(layout, 'B')));
        assert.equal(refused(await store.acquire(waiting(layout, 'C'))).reason, 'no-budget');
        assert.equal(refused(await store.acquire(waiting(layout, 'A'))).reason, 'queued', 'A is behind C now');
      });

      test('polling refreshes a waiter’s deadline: it keeps its place past its first one', async () => {
        const store = openOne({ windowMs: 60_000 });
        const { layout, held } = await fullPool(store, 'fifo-refresh');
        assert.equal(refused(await store.acquire(waiting(layout, 'A', 1000))).reason, 'no-budget');
        assert.equal(refused(await store.acquire(waiting(layout, 'B'))).reason, 'queued');
        for (let i = 0; i < 2; i++) {
          await sleep(600);
          assert.equal(refused(await store.acquire(waiting(layout, 'A', 1000))).reason, 'no-budget', 'A still heads the queue');
        }
        // 1.2 s after it joined, past its first deadline, A is in because it kept polling.
        await store.release(held[0] as Lease, 0);
        assert.equal(refused(await store.acquire(waiting(layout, 'B'))).reason, 'queued', 'B is still behind A');
        granted(await store.acquire(waiting(layout, 'A', 1000)));
      });

      test('leaveQueue takes a waiter out', async () => {
        const store = openOne({ windowMs: 60_000 });
        const { layout, held } = await fullPool(store, 'fifo-leave');
        refused(await store.acquire(waiting(layout, 'A')));
        assert.equal(refused(await store.acquire(waiting(layout, 'B'))).reason, 'queued');
        await store.leaveQueue('fifo-leave', 'A');
        await store.leaveQueue('fifo-leave', 'unknown');
        await store.leaveQueue('no-such-pool', 'B');
        await store.release(held[0] as Lease, 0);
        granted(await store.acquire(waiting(layout, 'B')));
      });

      test('an acquire without a ticket ignores the queue; queues are per pool', async () => {
        const store = openOne({ windowMs: 60_000 });
        const { layout, held } = await fullPool(store, 'fifo-bypass');
        refused(await store.acquire(waiting(layout, 'A')));
        assert.equal(refused(await store.acquire(waiting(layout, 'B'))).reason, 'queued');
        await store.release(held[0] as Lease, 0);
        const bypass = granted(await store.acquire(attempt(layout, { estimatedTokens: 500 })));
        assert.equal(refused(await store.acquire(waiting(layout, 'A'))).reason, 'no-budget', 'A still heads the queue');
        assert.equal(refused(await store.acquire(waiting(layout, 'B'))).reason, 'queued');
        const other = pool('fifo-other', 'least-requests', [{ id: 'a', tpm: 1000 }]);
        granted(await store.acquire(waiting(other, 'B')));
        await store.release(held[1] as Lease, 0);
        await store.release(bypass, 0);
        granted(await store.acquire(waiting(layout, 'A')));
        granted(await store.acquire(waiting(layout, 'B')));
      });

      test('a request no deployment could ever take is never queued', async () => {
        const store = openOne({ windowMs: 6000 });
        const { layout, held } = await fullPool(store, 'fifo-never');
        refused(await store.acquire(waiting(layout, 'A')));
        const tooBig = await store.acquire(waiting(layout, 'BIG', 30_000, 1001));
        assert.deepEqual(tooBig, { ok: false, reason: 'no-budget', retryAfterMs: 6000 }, 'told the truth at once, not queued');
        await store.release(held[0] as Lease, 0);
        granted(await store.acquire(waiting(layout, 'A')));
        const allExcluded = await store.acquire({ ...waiting(layout, 'X', 30_000, 0), exclude: ['a'] });
        assert.deepEqual(allExcluded, { ok: false, reason: 'unavailable', retryAfterMs: 6000 }, 'never servable: refused at once');
        await store.release(held[1] as Lease, 0);
        granted(await store.acquire(waiting(layout, 'C')));
      });
    });

    describe('background admission (batch lines, admitted last)', () => {
      const RESERVE = 0.3;
      function background(layout: PoolLayout, estimatedTokens: number, extra: Partial<AcquireInput> = {}): AcquireInput {
        return attempt(layout, { estimatedTokens, background: { reserve: RESERVE }, ...extra });
      }

      test('tokens: background stays within (1 − reserve) × tpm after its booking; interactive may use it all', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('bg-tpm', 'least-requests', [{ id: 'a', tpm: 1000 }]);
        granted(await store.acquire(attempt(layout, { estimatedTokens: 600 })));
        const over = refused(await store.acquire(background(layout, 101)));
        assert.equal(over.reason, 'no-budget');
        assert.ok(over.retryAfterMs > 50_000 && over.retryAfterMs <= 60_000, `when the 600 leave: ${over.retryAfterMs}`);
        granted(await store.acquire(attempt(layout, { estimatedTokens: 101 })));

        const almost = pool('bg-tpm-69', 'least-requests', [{ id: 'a', tpm: 1000 }]);
        granted(await store.acquire(attempt(almost, { estimatedTokens: 690 })));
        assert.equal(refused(await store.acquire(background(almost, 11))).reason, 'no-budget', '701 > 700');
        const fits = granted(await store.acquire(background(almost, 10)));
        assert.deepEqual([fits.deploymentId, fits.tokens, fits.probe], ['a', 10, false]);
        assert.equal((await store.snapshot(almost))[0]?.tokensInWindow, 700, 'exactly up to the token');
        assert.equal(refused(await store.acquire(background(almost, 1))).reason, 'no-budget');
        granted(await store.acquire(attempt(almost, { estimatedTokens: 300 })));
        assert.equal((await store.snapshot(almost))[0]?.tokensInWindow, 1000, 'interactive fills the reserve');
      });

      test('requests: the short window holds background to floor((1 − reserve) × ceil(rpm/6)), interactive to ceil(rpm/6)', async () => {
        const store = openOne({ windowMs: 60_000 });
        // rpm 100: 17 per short window; background floor(0.7 × 17) = 11 of them (not ceil(70 / 6) = 12), and 70 of the 100.
        const layout = pool('bg-rpm', 'least-requests', [{ id: 'a', rpm: 100 }]);
        for (let i = 0; i < 11; i++) granted(await store.acquire(background(layout, 0)));
        const full = refused(await store.acquire(background(layout, 0)));
        assert.equal(full.reason, 'no-budget');
        // Within 10 s (the short window), not the minute's: 9 s or less when the bookings crossed a bucket edge.
        assert.ok(full.retryAfterMs >= 8000 && full.retryAfterMs <= 10_000, `the short window frees first: ${full.retryAfterMs}`);
        for (let i = 0; i < 6; i++) granted(await store.acquire(attempt(layout)));
        assert.equal(refused(await store.acquire(attempt(layout))).reason, 'no-budget', 'interactive stops at 17');
      });

      test('requests: honouring retryAfterMs admits background, which never passes its reduced rpm in any window', async () => {
        // rpm 7: interactive 2 per short window and 7 per window; background floor(0.7 × 2) = 1 and floor(4.9) = 4.
        const store = openOne({ windowMs: 600 });
        const layout = pool('bg-rpm-retry', 'least-requests', [{ id: 'a', rpm: 7 }]);
        const buckets: number[] = [];
        let refusals = 0;
        for (let i = 0; i < 40 && buckets.length < 6; i++) {
          const result = await store.acquire(background(layout, 0));
          if (result.ok) {
            buckets.push(result.lease.bucket);
            continue;
          }
          refusals += 1;
          assert.equal(result.reason, 'no-budget');
          await honour(result.retryAfterMs);
          buckets.push(granted(await store.acquire(background(layout, 0))).bucket);
        }
        assert.equal(buckets.length, 6);
        assert.ok(refusals >= 3, `the reduced budgets did refuse (${refusals})`);
        for (const bucket of buckets) {
          const inWindow = buckets.filter((b) => b > bucket - 60 && b <= bucket).length;
          const inShort = buckets.filter((b) => b > bucket - 10 && b <= bucket).length;
          assert.ok(inWindow <= 4, `${inWindow} background requests in the window ending at ${bucket}`);
          assert.ok(inShort <= 1, `${inShort} background requests in the short window ending at ${bucket}`);
        }
        // The window's reserve is the interactive requests': one fits now (within 2 per short window).
        granted(await store.acquire(attempt(layout)));
      });

      test('honouring retryAfterMs for tokens lets a background request in', async () => {
        const store = openOne({ windowMs: 600 });
        const layout = pool('bg-tpm-retry', 'least-requests', [{ id: 'a', tpm: 1000 }]);
        const first = granted(await store.acquire(attempt(layout, { estimatedTokens: 600 })));
        await sleep(300);
        granted(await store.acquire(attempt(layout, { estimatedTokens: 100 })));
        const full = refused(await store.acquire(background(layout, 100)));
        assert.equal(full.reason, 'no-budget');
        assert.ok(full.retryAfterMs <= 300, `only the first booking must leave: ${full.retryAfterMs}`);
        await honour(full.retryAfterMs);
        const late = granted(await store.acquire(background(layout, 100)));
        assert.ok(late.bucket >= first.bucket + 60, 'admitted once the 600 left the window');
      });

      test('a request that never fits the reduced budgets: no-budget, a window; a limit cut to 0 admits nothing', async () => {
        const store = openOne({ windowMs: 6000 });
        const layout = pool('bg-never', 'least-requests', [
          { id: 'a', tpm: 1000 },
          { id: 'b', tpm: 500 },
        ]);
        assert.deepEqual(await store.acquire(background(layout, 701)), { ok: false, reason: 'no-budget', retryAfterMs: 6000 });
        granted(await store.acquire(attempt(layout, { estimatedTokens: 701 })));
        // rpm 1: floor(0.7) = 0 requests for background; tpm 1: floor(0.7) = 0 tokens, even for an estimate of 0.
        const tiny = pool('bg-zero', 'least-requests', [
          { id: 'a', rpm: 1 },
          { id: 'b', tpm: 1 },
        ]);
        assert.deepEqual(await store.acquire(background(tiny, 0)), { ok: false, reason: 'no-budget', retryAfterMs: 6000 });
        granted(await store.acquire(attempt(tiny)));
        granted(await store.acquire(attempt(tiny)));
      });

      test('deployments without budgets take background work as usual: only health applies', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('bg-unbudgeted', 'least-requests', [{ id: 'a', tpm: 100 }, { id: 'free' }]);
        const chosen = [];
        for (let i = 0; i < 10; i++) {
          const lease = granted(await store.acquire(background(layout, 1_000_000)));
          chosen.push(lease.deploymentId);
        }
        assert.deepEqual(new Set(chosen), new Set(['free']));
        await store.cooldown('bg-unbudgeted', 'free', 500);
        const cooling = refused(await store.acquire(background(layout, 1000)));
        assert.equal(cooling.reason, 'no-budget', 'a is healthy but can never take it');
        assert.ok(cooling.retryAfterMs <= 500 && cooling.retryAfterMs > 300, `free's cooldown end: ${cooling.retryAfterMs}`);
      });

      test('a half-open deployment is never a background probe; the interactive probe still goes', async () => {
        const store = openOne({ windowMs: 600 });
        const layout = pool('bg-half-open', 'least-requests', [{ id: 'a' }, { id: 'b' }]);
        await store.openCircuit('bg-half-open', 'a', 0);
        for (let i = 0; i < 10; i++) assert.equal(granted(await store.acquire(background(layout, 0))).deploymentId, 'b');
        const alone = await store.acquire(background(layout, 0, { exclude: ['b'] }));
        assert.deepEqual(alone, { ok: false, reason: 'unavailable', retryAfterMs: 600 }, 'no retry time of its own');
        await store.cooldown('bg-half-open', 'b', 300);
        const cooling = refused(await store.acquire(background(layout, 0)));
        assert.equal(cooling.reason, 'unavailable');
        assert.ok(cooling.retryAfterMs <= 300, `b's cooldown says when: ${cooling.retryAfterMs}`);
        const [a] = await store.snapshot(layout);
        assert.equal(a?.circuit, 'half-open');
        assert.equal(granted(await store.acquire(attempt(layout))).probe, true, 'no probe marker was taken by background work');
      });

      test('a live ticket in the wait queue blocks background work (queued, a poll hint); an expired one does not', async () => {
        const store = openOne({ windowMs: 60_000 });
        const layout = pool('bg-queue', 'least-requests', [{ id: 'a', tpm: 1000 }]);
        granted(await store.acquire(attempt(layout, { estimatedTokens: 500 })));
        const waiter = attempt(layout, { estimatedTokens: 600, queue: { ticket: 'W', ttlMs: 250 } });
        assert.equal(refused(await store.acquire(waiter)).reason, 'no-budget', 'the waiter heads the queue');
        const blocked = refused(await store.acquire(background(layout, 100)));
        assert.equal(blocked.reason, 'queued');
        assert.ok(blocked.retryAfterMs >= 1 && blocked.retryAfterMs <= 1000, `the next bucket edge: ${blocked.retryAfterMs}`);
        const tooBig = await store.acquire(background(layout, 701));
        assert.deepEqual(tooBig, { ok: false, reason: 'no-budget', retryAfterMs: 60_000 }, 'never servable: the truth, not queued');
        granted(await store.acquire(attempt(layout, { estimatedTokens: 100 })));
        await sleep(300); // the waiter stopped polling
        granted(await store.acquire(background(layout, 100)));
        const interactive = attempt(layout, { estimatedTokens: 1000, queue: { ticket: 'X', ttlMs: 30_000 } });
        assert.equal(refused(await store.acquire(interactive)).reason, 'no-budget', 'background work did not join the queue');
      });

      test('background work with a queue ticket is a caller error', async () => {
        const store = openOne();
        const layout = pool('bg-and-queue', 'least-requests', [{ id: 'a' }]);
        await assert.rejects(store.acquire(background(layout, 0, { queue: { ticket: 'T', ttlMs: 1000 } })), /queue/);
      });
    });

    describe('slow start', () => {
      /** Share of `count` acquires (each released at once) that went to `id`. */
      async function shareOf(store: Store, layout: PoolLayout, id: string, count: number, extra: Partial<AcquireInput> = {}) {
        let hits = 0;
        for (let i = 0; i < count; i++) {
          const lease = granted(await store.acquire(attempt(layout, extra)));
          if (lease.deploymentId === id) hits += 1;
          await store.release(lease);
        }
        return hits / count;
      }

      test('after closeCircuit a deployment ramps from 10 % of its share to all of it over slowStartMs', async () => {
        const store = openOne();
        const layout = pool('ss-ramp', 'least-requests', [{ id: 'a' }, { id: 'b' }]);
        await store.openCircuit('ss-ramp', 'a', 0);
        await store.closeCircuit('ss-ramp', 'a');
        const closedAt = performance.now();
        const since = (await store.snapshot(layout))[0]?.slowStartSince ?? 0;
        assert.ok(Math.abs(since - Date.now()) < 1000, `slowStartSince is epoch ms of the close: ${since}`);
        assert.equal((await store.snapshot(layout))[1]?.slowStartSince, 0);

        // A 10-minute slow start barely moves in a second: a is kept 10 % of the time, then ties with b.
        const start = await shareOf(store, layout, 'a', 800, { slowStartMs: 600_000 });
        assert.ok(start >= 0.02 && start <= 0.12, `≈ 5 % (10 % of its half) at the start: ${start}`);
        // Without a slow start (the option absent) it has its whole half at once.
        const off = await shareOf(store, layout, 'a', 400);
        assert.ok(off >= 0.38 && off <= 0.62, `no slow start asked: ${off}`);

        // Once slowStartMs has passed since the close: its whole half. (Shares half-way through are pinned
        // where the moment can be set: memory-store.test.ts, redis-store.test.ts.)
        await sleep(Math.max(0, 600 + 50 - (performance.now() - closedAt)));
        const after = await shareOf(store, layout, 'a', 400, { slowStartMs: 600 });
        assert.ok(after >= 0.38 && after <= 0.62, `≈ 50 % after the ramp: ${after}`);
      });

      test('every strategy keeps a slow-starting deployment only with its share', async () => {
        const store = openOne();
        for (const strategy of ['least-requests', 'round-robin', 'random', 'power-of-two', 'weighted'] as const) {
          const layout = pool(`ss-${strategy}`, strategy, [{ id: 'a' }, { id: 'b' }]);
          await store.reset(layout.name, 'a', { slowStart: true });
          const share = await shareOf(store, layout, 'a', 400, { slowStartMs: 600_000 });
          assert.ok(share >= 0.01 && share <= 0.15, `${strategy}: ≈ 5 %, got ${share}`);
        }
      });

      test('a tier whose candidates are all slow-starting keeps them all; a lone one takes everything', async () => {
        const store = openOne();
        const layout = pool('ss-all', 'least-requests', [{ id: 'a' }, { id: 'b' }, { id: 'spill', priority: 2 }]);
        await store.reset('ss-all', 'a', { slowStart: true });
        await store.reset('ss-all', 'b', { slowStart: true });
        const slowStart = { slowStartMs: 600_000 };
        const both = await picks(store, layout, 200, true, slowStart);
        const counts = countBy(both);
        assert.equal(counts.get('spill'), undefined, 'a lower tier never takes what a slow-starting tier can');
        assert.ok((counts.get('a') ?? 0) > 60 && (counts.get('b') ?? 0) > 60, `none dropped: ${[...counts]}`);

        await store.cooldown('ss-all', 'b', 30_000);
        const alone = countBy(await picks(store, layout, 50, true, slowStart));
        assert.deepEqual([...alone], [['a', 50]], 'the only candidate of its tier is never dropped');
      });

      test('a plain reset ends a slow start at once; a reset with slowStart begins one', async () => {
        const store = openOne();
        const layout = pool('ss-reset', 'least-requests', [{ id: 'a' }, { id: 'b' }]);
        const before = Date.now();
        await store.reset('ss-reset', 'a', { slowStart: true });
        const [ramping] = await store.snapshot(layout);
        assert.ok((ramping?.slowStartSince ?? 0) >= before - 1000 && (ramping?.resetAt ?? 0) > 0, JSON.stringify(ramping));
        assert.ok((await shareOf(store, layout, 'a', 400, { slowStartMs: 600_000 })) <= 0.15);
        await store.reset('ss-reset', 'a');
        assert.equal((await store.snapshot(layout))[0]?.slowStartSince, 0);
        const full = await shareOf(store, layout, 'a', 400, { slowStartMs: 600_000 });
        assert.ok(full >= 0.38 && full <= 0.62, `full traffic at once: ${full}`);
      });

      test('cooldown with slowStart: the ramp begins at the cooldown’s end, and follows an extension', async () => {
        const store = openOne();
        const layout = pool('ss-cooldown', 'least-requests', [{ id: 'a' }, { id: 'b' }]);
        const until = await store.cooldown('ss-cooldown', 'a', 200, { slowStart: true });
        assert.equal((await store.snapshot(layout))[0]?.slowStartSince, until);
        const extended = await store.cooldown('ss-cooldown', 'a', 300); // a plain 429 meanwhile, later than the first
        assert.ok(extended > until);
        assert.equal((await store.snapshot(layout))[0]?.slowStartSince, extended, 'the pending ramp follows its cooldown');
        const shorter = await store.cooldown('ss-cooldown', 'a', 10, { slowStart: true });
        assert.equal(shorter, extended);
        assert.equal((await store.snapshot(layout))[0]?.slowStartSince, extended, 'a call that extends nothing moves nothing');
        assert.deepEqual(new Set(await picks(store, layout, 10, true)), new Set(['b']), 'out while cooling down');
        await sleep(Math.max(0, extended - Date.now()) + 20);
        const start = await shareOf(store, layout, 'a', 400, { slowStartMs: 600_000 });
        assert.ok(start >= 0.01 && start <= 0.15, `≈ 5 % once back: ${start}`);

        const plain = pool('ss-cooldown-plain', 'least-requests', [{ id: 'a' }, { id: 'b' }]);
        await store.cooldown('ss-cooldown-plain', 'a', 100);
        assert.equal((await store.snapshot(plain))[0]?.slowStartSince, 0, 'a short cooldown brings no slow start');
      });

      test('closeCircuit on a closed circuit starts no slow start', async () => {
        const store = openOne();
        const layout = pool('ss-closed', 'least-requests', [{ id: 'a' }]);
        await store.closeCircuit('ss-closed', 'a');
        assert.equal((await store.snapshot(layout))[0]?.slowStartSince, 0);
      });
    });

    test('snapshot reports live values of every deployment', async () => {
      const store = openOne({ windowMs: 60_000 });
      const layout = pool('snap', 'least-requests', [{ id: 'a', tpm: 5000 }, { id: 'b' }, { id: 'c' }]);
      await load(store, layout, 'a', 2);
      const [lease] = await load(store, layout, 'b', 1);
      await store.release(lease as Lease, 42);
      const until = await store.cooldown('snap', 'c', 10_000);
      await store.openCircuit('snap', 'b', 10_000);
      const snapshot = await store.snapshot(layout);
      assert.deepEqual(
        snapshot.map(({ circuitOpenUntil: _, ...rest }) => rest),
        [
          {
            id: 'a',
            inFlight: 2,
            tokensInWindow: 0,
            requestsInWindow: 2,
            cooldownUntil: 0,
            circuit: 'closed',
            drained: false,
            resetAt: 0,
            slowStartSince: 0,
          },
          {
            id: 'b',
            inFlight: 0,
            tokensInWindow: 42,
            requestsInWindow: 1,
            cooldownUntil: 0,
            circuit: 'open',
            drained: false,
            resetAt: 0,
            slowStartSince: 0,
          },
          {
            id: 'c',
            inFlight: 0,
            tokensInWindow: 0,
            requestsInWindow: 0,
            cooldownUntil: until,
            circuit: 'closed',
            drained: false,
            resetAt: 0,
            slowStartSince: 0,
          },
        ],
      );
      assert.equal(snapshot[0]?.circuitOpenUntil, 0);
      assert.ok(Math.abs((snapshot[1]?.circuitOpenUntil ?? 0) - (until - 10_000) - 10_000) < 1000);
      assert.deepEqual(await store.snapshot(pool('empty', 'random', [])), []);
    });

    test('ping answers true while the store is up', async () => {
      assert.equal(await openOne().ping(), true);
    });
  });
}
