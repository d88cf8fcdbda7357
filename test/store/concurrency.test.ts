/**
 * RedisStore under real concurrency: many clients (as many gateway instances would) race for one
 * pool, and the atomic scripts must still keep every budget and balance exactly.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KeyLayout } from '../../shared/store/keys.ts';
import { RedisStore } from '../../shared/store/redis-store.ts';
import type { AcquireResult, Lease, PoolLayout, QuotaInput, QuotaResult } from '../../shared/store/types.ts';
import { countBy, granted, pool, uniquePrefix } from '../helpers/store-suite.ts';

const redisUrl = process.env.REDIS_URL;
if (!redisUrl) throw new Error('REDIS_URL is not set: run through `npm test` or set it to a Redis the tests may write to');

const INSTANCES = 8;

describe('RedisStore with 8 clients racing', () => {
  const keyPrefix = uniquePrefix();
  // Connected in before(), not here: a run that filters out every test skips the hooks, and clients
  // made at collection time would then keep the process alive.
  let stores: RedisStore[] = [];
  before(async () => {
    stores = Array.from({ length: INSTANCES }, () => new RedisStore(redisUrl, { keyPrefix, windowMs: 60_000 }));
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

  /** `perInstance` quota bookings from every store at once. */
  function raceQuota(input: QuotaInput, perInstance: number): Promise<QuotaResult[]> {
    return Promise.all(stores.flatMap((store) => Array.from({ length: perInstance }, () => store.acquireQuota(input))));
  }

  test('client quotas hold exactly: parallel bookings grant exactly what fits', async () => {
    const tokens = await raceQuota({ subject: 'race-tpm', tpm: 10_000, estimatedTokens: 100 }, 30); // 240 × 100 against 10 000
    const tokenGrants = tokens.flatMap((r) => (r.ok ? [r] : []));
    assert.equal(tokenGrants.length, 100);
    // Every grant saw its own state: the remaining figures are 9 900, 9 800, …, 0, each once.
    assert.deepEqual(
      tokenGrants.map((r) => r.remainingTokens).sort((x, y) => (x ?? 0) - (y ?? 0)),
      Array.from({ length: 100 }, (_, i) => i * 100),
    );
    for (const r of tokens) if (!r.ok) assert.deepEqual([r.reason, r.remainingTokens], ['tokens', 0]);

    const requests = await raceQuota({ subject: 'race-rpm', rpm: 50, estimatedTokens: 10 }, 10); // 80 against 50
    const requestGrants = requests.flatMap((r) => (r.ok ? [r] : []));
    assert.equal(requestGrants.length, 50);
    assert.deepEqual(
      requestGrants.map((r) => r.remainingRequests).sort((x, y) => (x ?? 0) - (y ?? 0)),
      Array.from({ length: 50 }, (_, i) => i),
    );
    for (const r of requests) if (!r.ok) assert.deepEqual([r.reason, r.remainingRequests], ['requests', 0]);
  });

  test('the wait queue serves waiters on different instances in arrival order, one per freed room', async () => {
    const name = 'race-queue';
    const layout = pool(name, 'least-requests', [{ id: 'a', tpm: 800 }]);
    const held = await Promise.all(
      stores.map(async (store) =>
        granted(await store.acquire({ pool: layout, leaseId: randomUUID(), leaseMs: 30_000, estimatedTokens: 100 })),
      ),
    );
    const tickets = stores.map((_, i) => `waiter-${i}`);
    const poll = (i: number): Promise<AcquireResult> =>
      stores[i]!.acquire({
        pool: layout,
        leaseId: randomUUID(),
        leaseMs: 30_000,
        estimatedTokens: 100,
        queue: { ticket: tickets[i]!, ttlMs: 30_000 },
      });

    // All join at once; Redis serialises them, and that order is the one to keep.
    const joined = await Promise.all(stores.map((_, i) => poll(i)));
    assert.ok(joined.every((r) => !r.ok));
    const order = await stores[0]!.client.zrange(new KeyLayout(keyPrefix).queue(name).order, 0, -1);
    assert.deepEqual([...order].sort(), [...tickets].sort());
    const headFirst = joined.map((r, i) => [tickets[i], r.ok ? 'granted' : r.reason]);
    assert.deepEqual(
      countBy(headFirst.map(([, reason]) => reason)),
      new Map([
        ['no-budget', 1],
        ['queued', 7],
      ]),
    );
    assert.deepEqual(headFirst.find(([, reason]) => reason === 'no-budget')?.[0], order[0], 'the first to arrive was told the truth');

    const served: string[] = [];
    let waiting = stores.map((_, i) => i);
    for (const lease of held) {
      await stores[0]!.release(lease, 0); // room for one more
      const results = await Promise.all(waiting.map((i) => poll(i)));
      const grantedNow = waiting.filter((_, k) => results[k]?.ok);
      assert.equal(grantedNow.length, 1, `exactly one waiter served per room: ${JSON.stringify(results)}`);
      served.push(tickets[grantedNow[0]!]!);
      const reasons = new Set(results.flatMap((r) => (r.ok ? [] : [r.reason])));
      // The next head finds no room; everyone behind it is queued.
      assert.ok(
        [...reasons].every((reason) => reason === 'queued' || reason === 'no-budget'),
        `${[...reasons]}`,
      );
      waiting = waiting.filter((i) => i !== grantedNow[0]);
    }
    assert.deepEqual(served, order);
  });

  test(
    'background work never pushes a deployment past (1 − reserve) of its tpm, while interactive fills it',
    { timeout: 10_000 },
    async () => {
      const reserve = 0.3;
      const layout = pool('race-background', 'least-requests', [
        { id: 'a', tpm: 10_000 },
        { id: 'b', tpm: 10_000 },
        { id: 'c', tpm: 6_000 },
      ]);
      const limits = new Map(layout.deployments.map((d) => [d.id, Math.floor((1 - reserve) * (d.tpm ?? 0))]));
      // Tokens in window only grow here (a 60 s window; releases keep the reservation): once the monitor saw a
      // deployment past its background limit, no background acquire issued after that may land on it.
      const seenPast = new Set<string>();
      const backgroundTokens = new Map<string, number>();
      let lateGrants = 0;
      let backgroundGrants = 0;
      let stop = false;
      const monitor = (async () => {
        while (!stop) {
          for (const d of await stores[0]!.snapshot(layout)) if (d.tokensInWindow > (limits.get(d.id) ?? 0)) seenPast.add(d.id);
          await sleep(1);
        }
      })();
      const deadline = performance.now() + 5000;
      const worker = async (store: RedisStore, kind: 'interactive' | 'background'): Promise<void> => {
        // Each worker stops at its first refusal: the pool is full for it (nothing leaves a 60 s window here).
        while (performance.now() < deadline) {
          const pastAtIssue = new Set(seenPast);
          const result = await store.acquire({
            pool: layout,
            leaseId: randomUUID(),
            leaseMs: 30_000,
            estimatedTokens: 100,
            ...(kind === 'background' ? { background: { reserve } } : {}),
          });
          if (!result.ok) {
            assert.equal(result.reason, 'no-budget');
            return;
          }
          const { lease } = result;
          if (kind === 'background') {
            backgroundGrants += 1;
            backgroundTokens.set(lease.deploymentId, (backgroundTokens.get(lease.deploymentId) ?? 0) + lease.tokens);
            if (pastAtIssue.has(lease.deploymentId)) lateGrants += 1;
          }
          await store.release(lease);
        }
      };
      await Promise.all(
        // Three background workers to one interactive: unchecked, background work would take about 3/4 of each tpm.
        stores.flatMap((store) => [worker(store, 'interactive'), ...[1, 2, 3].map(() => worker(store, 'background'))]),
      );
      stop = true;
      await monitor;
      assert.equal(lateGrants, 0, 'no background grant on a deployment already past its background limit');
      for (const [id, tokens] of backgroundTokens) assert.ok(tokens <= (limits.get(id) ?? 0), `${id}: ${tokens} background tokens`);
      assert.ok(backgroundGrants >= 50, `background work did run (${backgroundGrants} grants)`);
      assert.ok(seenPast.size === 3, `every deployment went past its background limit: ${[...seenPast]}`);
      assert.deepEqual(
        (await stores[0]!.snapshot(layout)).map((d) => d.tokensInWindow),
        [10_000, 10_000, 6_000],
        'interactive filled the reserve, exactly to tpm',
      );

      // Background work alone, racing from every client: exactly up to its limits, never a token more.
      const alone = pool('race-background-alone', 'least-requests', [...layout.deployments]);
      const results = await Promise.all(
        stores.flatMap((store) =>
          Array.from({ length: 40 }, () =>
            store.acquire({ pool: alone, leaseId: randomUUID(), leaseMs: 30_000, estimatedTokens: 100, background: { reserve } }),
          ),
        ),
      );
      assert.equal(results.filter((r) => r.ok).length, 182, '70 + 70 + 42 of 320');
      assert.deepEqual(
        (await stores[0]!.snapshot(alone)).map((d) => d.tokensInWindow),
        [7000, 7000, 4200],
      );
    },
  );

  test('live lease counts stay exact while every client acquires, releases and lets leases die at once', { timeout: 20_000 }, async () => {
    const name = 'race-counts';
    // Long enough that none dies while the 320 acquires run on a loaded machine (then 'while every lease lives' holds).
    const DYING_LEASE_MS = 4000;
    const layout = pool(name, 'least-requests', [{ id: 'a' }, { id: 'b' }, { id: 'c' }, { id: 'd' }]);
    const kept: Lease[] = [];
    const dying: Lease[] = [];
    let ended = 0;
    await Promise.all(
      stores.map(async (store, s) => {
        for (let i = 0; i < 40; i++) {
          // Every third lease dies unreleased (a short lease time), every third is released, the rest held.
          const dies = i % 3 === 0;
          const lease = granted(
            await store.acquire({ pool: layout, leaseId: randomUUID(), leaseMs: dies ? DYING_LEASE_MS : 30_000, estimatedTokens: 0 }),
          );
          if (dies) {
            dying.push(lease);
            continue;
          }
          if (i % 3 === 1) {
            // Released by another client than the one that acquired it, twice (idempotent).
            await Promise.all([stores[(s + 1) % INSTANCES]!.release(lease), stores[(s + 2) % INSTANCES]!.release(lease)]);
            ended += 1;
          } else {
            kept.push(lease);
          }
        }
      }),
    );
    assert.equal(ended, INSTANCES * 13);
    const keys = new KeyLayout(keyPrefix);
    // Nothing has died yet: the counts are the acquires minus the releases, exactly.
    const alive = countBy([...kept, ...dying].map((lease) => lease.deploymentId));
    const live = await stores[0]!.client.hgetall(keys.inflight(name));
    assert.deepEqual(
      layout.deployments.map(({ id }) => Number(live[keys.deployment(name, id).leases] ?? 0)),
      layout.deployments.map(({ id }) => alive.get(id) ?? 0),
      'the in-flight hash while every lease lives',
    );
    // least-requests balanced what it saw: every live lease, the dying ones included (which deployment's
    // leases die later is up to the test, so what is kept alone need not be even).
    const liveCounts = layout.deployments.map(({ id }) => alive.get(id) ?? 0);
    assert.ok(Math.max(...liveCounts) - Math.min(...liveCounts) <= INSTANCES, `live leases per deployment: ${liveCounts}`);
    await sleep(DYING_LEASE_MS + 100); // the short leases are dead now
    // Acquires from every client at once reap the dead leases as they go; each must see only live ones.
    const more = await Promise.all(
      stores.map(async (store) =>
        granted(await store.acquire({ pool: layout, leaseId: randomUUID(), leaseMs: 30_000, estimatedTokens: 0 })),
      ),
    );
    kept.push(...more);
    const expected = countBy(kept.map((lease) => lease.deploymentId));
    const counts = await stores[0]!.client.hgetall(keys.inflight(name));
    for (const { id } of layout.deployments) {
      const leasesKey = keys.deployment(name, id).leases;
      assert.equal(Number(counts[leasesKey] ?? 0), expected.get(id) ?? 0, `${id}: the in-flight hash`);
      assert.equal(await stores[0]!.client.zcard(leasesKey), expected.get(id) ?? 0, `${id}: dead leases reaped, ended ones gone`);
    }
    assert.deepEqual(
      (await stores[0]!.snapshot(layout)).map((d) => d.inFlight),
      layout.deployments.map((d) => expected.get(d.id) ?? 0),
    );
  });

  test('round-robin stays fair across instances acquiring at once', async () => {
    const layout = pool('race-rr', 'round-robin', [{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
    const results = await race(layout, 30, 0); // 240 picks
    const chosen = countBy(results.flatMap((r) => (r.ok ? [r.lease.deploymentId] : [])));
    assert.deepEqual(Object.fromEntries(chosen), { a: 80, b: 80, c: 80 });
  });
});
