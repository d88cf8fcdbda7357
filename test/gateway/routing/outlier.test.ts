import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { GatewaySettings } from '../../../shared/config/schema.ts';
import { MemoryStore } from '../../../shared/store/memory-store.ts';
import type { Lease, Store } from '../../../shared/store/types.ts';
import { Metrics } from '../../../gateway/metrics.ts';
import type { Pool } from '../../../gateway/pools.ts';
import { CountedFailure, Health } from '../../../gateway/routing/health.ts';
import { LiveStore } from '../../../gateway/routing/live-store.ts';
import { othersInRotation, Outliers } from '../../../gateway/routing/outlier.ts';
import { memoryLogger, poolSetup, redisStore, type LogLine } from '../../helpers/collaborators.ts';
import { until } from '../../helpers/fixtures.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('Outliers (the arithmetic)', () => {
  const settings = { consecutiveFailures: 3, baseEjectionMs: 1000, maxEjectionMs: 3500 };

  test('a run of consecutiveFailures ejects; a success in between starts the run over', () => {
    const outliers = new Outliers(settings);
    assert.deepEqual([outliers.failed('p/a'), outliers.failed('p/a'), outliers.failed('p/a')], [false, false, true]);
    assert.deepEqual([outliers.failed('p/a'), outliers.failed('p/a')], [false, false], 'the run starts over after an ejection');
    outliers.succeeded('p/a');
    assert.deepEqual([outliers.failed('p/a'), outliers.failed('p/a'), outliers.failed('p/a')], [false, false, true]);
    assert.equal(outliers.failed('p/b'), false, 'per deployment');
  });

  test('consecutiveFailures 0 never ejects', () => {
    const outliers = new Outliers({ ...settings, consecutiveFailures: 0 });
    for (let i = 0; i < 50; i++) assert.equal(outliers.failed('p/a'), false);
  });

  test('each ejection in a row lasts base × n, capped; n drops by one per base the deployment stays in rotation', () => {
    const outliers = new Outliers(settings);
    let now = 1_000_000;
    const eject = () => {
      const ejection = outliers.next('p/a', now);
      outliers.ejected('p/a', ejection, now);
      now += ejection.durationMs; // back in rotation when it ends, and fails again at once
      return ejection;
    };
    assert.deepEqual(
      [eject(), eject(), eject(), eject()],
      [
        { durationMs: 1000, ejections: 1 },
        { durationMs: 2000, ejections: 2 },
        { durationMs: 3000, ejections: 3 },
        { durationMs: 3500, ejections: 4 },
      ],
    );
    now += 2500; // two base times in rotation: n from 4 to 2, so the next is the third in a row
    assert.deepEqual(eject(), { durationMs: 3000, ejections: 3 });
    now += 60_000;
    assert.deepEqual(eject(), { durationMs: 1000, ejections: 1 }, 'long in rotation: a first ejection again');
    assert.deepEqual(outliers.next('p/b', now), { durationMs: 1000, ejections: 1 });
  });

  test('othersInRotation counts closed circuits not cooling down and not drained, the deployment itself aside', () => {
    const now = Date.now();
    const d = (id: string, circuit: 'closed' | 'open' | 'half-open', cooldownUntil = 0, drained = false) => ({
      id,
      inFlight: 0,
      tokensInWindow: 0,
      requestsInWindow: 0,
      cooldownUntil,
      circuit,
      circuitOpenUntil: 0,
      drained,
      resetAt: 0,
      slowStartSince: 0,
    });
    const snapshot = [
      d('a', 'closed'),
      d('b', 'open'),
      d('c', 'half-open'),
      d('e', 'closed', now + 5000),
      d('f', 'closed', now - 5),
      d('g', 'closed', 0, true),
    ];
    assert.equal(othersInRotation(snapshot, 'a', now), 1, 'f alone: b open, c half-open, e cooling down, g drained');
    assert.equal(othersInRotation(snapshot, 'f', now), 1);
    assert.equal(othersInRotation(snapshot, 'b', now), 2);
  });

  test('forgetBefore: a reset after the latest ejection makes the next one a first again; one before it changes nothing', () => {
    const outliers = new Outliers(settings);
    let now = 1_000_000;
    for (let i = 0; i < 2; i++) {
      const ejection = outliers.next('p/a', now);
      outliers.ejected('p/a', ejection, now);
      now += ejection.durationMs;
    }
    assert.deepEqual(outliers.next('p/a', now), { durationMs: 3000, ejections: 3 });
    assert.equal(outliers.forgetBefore('p/a', 0), false, 'never reset');
    assert.equal(outliers.forgetBefore('p/a', 1_000_500), false, 'reset before the latest ejection');
    assert.deepEqual(outliers.next('p/a', now), { durationMs: 3000, ejections: 3 });
    assert.equal(outliers.forgetBefore('p/a', now), true);
    assert.deepEqual(outliers.next('p/a', now), { durationMs: 1000, ejections: 1 });
    assert.equal(outliers.forgetBefore('p/a', now), false, 'nothing left to forget');
    assert.equal(outliers.forgetBefore('p/unknown', now), false);
  });
});

interface Instance {
  health: Health;
  metrics: Metrics;
  lines: LogLine[];
}

describe('Health with outlier detection, on Redis', () => {
  /** A pool of `ids`; the breaker's rate out of the way (volume 1000), so ejections are the outlier detector's. */
  function setup(ids: string[], outlier: Record<string, number>) {
    const parts = poolSetup(
      ids.map((id) => ({ id })),
      { gateway: { outlier, breaker: { volumeThreshold: 1000 } } },
    );
    const store = redisStore();
    cleanups.push(() => store.close());
    return { ...parts, store };
  }

  function instance(store: Store, settings: GatewaySettings): Instance {
    const { logger, lines } = memoryLogger();
    const metrics = new Metrics(false);
    const health = new Health(new LiveStore(store, new MemoryStore(), metrics, logger), settings, logger, metrics);
    cleanups.push(() => health.close());
    return { health, metrics, lines };
  }

  async function acquire(store: Store, pool: Pool, id: string) {
    const others = pool.layout.deployments.map((d) => d.id).filter((other) => other !== id);
    return store.acquire({ pool: pool.layout, leaseId: randomUUID(), leaseMs: 30_000, estimatedTokens: 0, exclude: others });
  }

  async function leaseOn(store: Store, pool: Pool, id: string): Promise<Lease> {
    const result = await acquire(store, pool, id);
    assert.ok(result.ok, `expected a lease on ${id}, got ${JSON.stringify(result)}`);
    return result.lease;
  }

  /** One attempt on `id` that fails before any body (a 5xx), or whose body breaks off. */
  async function fail(health: Health, store: Store, pool: Pool, id: string, how: 'status' | 'body' = 'status', lease?: Lease) {
    const granted = lease ?? (await leaseOn(store, pool, id));
    const held = { lease: granted, deployment: pool.deployments.get(id)!, store };
    if (how === 'status') {
      await health.guard(pool.layout, held, async () => {
        throw new CountedFailure('503');
      });
    } else {
      const guarded = await health.guard(pool.layout, held, async () => '200');
      await guarded!.end('broke');
    }
    await store.release(granted);
  }

  async function succeed(health: Health, store: Store, pool: Pool, id: string, lease?: Lease) {
    const granted = lease ?? (await leaseOn(store, pool, id));
    const guarded = await health.guard(pool.layout, { lease: granted, deployment: pool.deployments.get(id)!, store }, async () => '200');
    await guarded!.end('whole');
    await store.release(granted);
  }

  async function stateOf(store: Store, pool: Pool, id: string) {
    const state = (await store.snapshot(pool.layout)).find((d) => d.id === id);
    assert.ok(state);
    return state;
  }

  async function probeOn(store: Store, pool: Pool, id: string): Promise<Lease> {
    let probe: Lease | undefined;
    await until(
      async () => {
        const result = await acquire(store, pool, id);
        if (result.ok) probe = result.lease;
        return result.ok;
      },
      5000,
      `the probe lease on ${id}`,
    );
    assert.equal(probe?.probe, true);
    return probe!;
  }

  async function opens(metrics: Metrics, labels: Record<string, string>): Promise<number> {
    const values = (await metrics.circuitOpens.get()).values;
    return values
      .filter((v) => Object.entries(labels).every(([k, value]) => (v.labels as Record<string, unknown>)[k] === value))
      .reduce((sum, v) => sum + v.value, 0);
  }

  test('consecutive failures, broken bodies among them, eject the deployment for every instance for baseEjectionMs', async () => {
    const { pool, settings, store } = setup(['a', 'b'], { consecutiveFailures: 3, baseEjectionMs: 20_000 });
    const { health, metrics, lines } = instance(store, settings);
    await fail(health, store, pool, 'a', 'status');
    await fail(health, store, pool, 'a', 'body');
    assert.equal((await stateOf(store, pool, 'a')).circuit, 'closed', 'not before the third');
    const before = Date.now();
    await fail(health, store, pool, 'a', 'body');
    const state = await stateOf(store, pool, 'a');
    assert.equal(state.circuit, 'open', 'published by the time the failing attempt returns');
    const openMs = state.circuitOpenUntil - before;
    assert.ok(openMs > 15_000 && openMs <= 21_000, `out for baseEjectionMs (${openMs} ms)`);
    const refusal = await acquire(store, pool, 'a');
    assert.ok(!refusal.ok && refusal.reason === 'unavailable', 'another instance gets nothing on a');
    assert.equal(await opens(metrics, { pool: pool.name, deployment: 'a', cause: 'outlier' }), 1);
    const line = lines.find((l) => l.message.startsWith('circuit opened'));
    assert.deepEqual([line?.level, line?.cause, line?.ejections], ['warn', 'outlier', 1]);
  });

  test('a success between failures starts the run over; a client that left neither fails nor ends the run', async () => {
    const { pool, settings, store } = setup(['a', 'b'], { consecutiveFailures: 3, baseEjectionMs: 20_000 });
    const { health } = instance(store, settings);
    await fail(health, store, pool, 'a');
    await fail(health, store, pool, 'a');
    await succeed(health, store, pool, 'a');
    await fail(health, store, pool, 'a');
    await fail(health, store, pool, 'a');
    assert.equal((await stateOf(store, pool, 'a')).circuit, 'closed', 'two in a row since the success');
    for (let i = 0; i < 5; i++) {
      const lease = await leaseOn(store, pool, 'a');
      const guarded = await health.guard(pool.layout, { lease, deployment: pool.deployments.get('a')!, store }, async () => '200');
      await guarded!.end('left');
      await store.release(lease);
    }
    assert.equal((await stateOf(store, pool, 'a')).circuit, 'closed', 'five clients leaving are no failures');
    await fail(health, store, pool, 'a');
    assert.equal((await stateOf(store, pool, 'a')).circuit, 'open', 'nor did they end the run: this is its third');
  });

  test('a failed probe ejects for longer each time, up to maxEjectionMs; a probe that succeeds closes the circuit', async () => {
    const { pool, settings, store } = setup(['a', 'b'], { consecutiveFailures: 2, baseEjectionMs: 400, maxEjectionMs: 1000 });
    const { health, metrics } = instance(store, settings);
    // How long the circuit was opened for, bracketed by the times before and after the act (one machine, one clock).
    const openedFor = async (act: () => Promise<void>, expected: number, what: string) => {
      const before = Date.now();
      await act();
      const after = Date.now();
      const state = await stateOf(store, pool, 'a');
      assert.equal(state.circuit, 'open', what);
      const [least, most] = [state.circuitOpenUntil - after, state.circuitOpenUntil - before];
      assert.ok(least - 5 <= expected && expected <= most + 5, `${what}: ${expected} ms, opened for ${least}…${most} ms`);
    };
    await openedFor(
      async () => {
        await fail(health, store, pool, 'a');
        await fail(health, store, pool, 'a');
      },
      400,
      'the first ejection: base',
    );
    let probe = await probeOn(store, pool, 'a');
    await openedFor(() => fail(health, store, pool, 'a', 'body', probe), 800, 'its probe failed: twice base');
    probe = await probeOn(store, pool, 'a');
    await openedFor(() => fail(health, store, pool, 'a', 'status', probe), 1000, 'again: capped at maxEjectionMs');
    assert.equal(await opens(metrics, { pool: pool.name, deployment: 'a', cause: 'probe' }), 2);
    await succeed(health, store, pool, 'a', await probeOn(store, pool, 'a'));
    assert.deepEqual([(await stateOf(store, pool, 'a')).circuit, (await stateOf(store, pool, 'a')).circuitOpenUntil], ['closed', 0]);
  });

  test('the last deployment of a pool in rotation is never ejected, by the outlier detector or the breaker', async () => {
    const parts = poolSetup([{ id: 'a' }, { id: 'b' }], {
      gateway: { outlier: { consecutiveFailures: 3, baseEjectionMs: 20_000 }, breaker: { volumeThreshold: 3 } },
    });
    const store = redisStore();
    cleanups.push(() => store.close());
    const { pool, settings } = parts;
    const { health, lines, metrics } = instance(store, settings);
    for (let i = 0; i < 3; i++) await fail(health, store, pool, 'a');
    assert.equal((await stateOf(store, pool, 'a')).circuit, 'open');
    for (let i = 0; i < 8; i++) await fail(health, store, pool, 'b', i % 2 ? 'body' : 'status');
    await sleep(100); // the breaker's own openings are published off the attempt's path
    assert.equal((await stateOf(store, pool, 'b')).circuit, 'closed', 'b is what the pool has left');
    assert.ok((await acquire(store, pool, 'b')).ok, 'and the store still grants it');
    assert.equal(await opens(metrics, { pool: pool.name, deployment: 'b' }), 0);
    const kept = lines.filter((l) => l.message.startsWith('deployment kept in rotation'));
    assert.ok(kept.length >= 1, 'the refusal is logged');
    assert.ok(kept.length <= 3, `not once per failure (${kept.length})`);
  });

  test('a drained deployment counts as out of rotation: the last one left in rotation is never ejected', async () => {
    const { pool, settings, store } = setup(['a', 'b'], { consecutiveFailures: 3, baseEjectionMs: 20_000 });
    const { health, lines } = instance(store, settings);
    await store.drain(pool.name, 'b');
    for (let i = 0; i < 3; i++) await fail(health, store, pool, 'a');
    assert.equal((await stateOf(store, pool, 'a')).circuit, 'closed', 'a is all the pool has in rotation');
    assert.ok(lines.some((l) => l.message.startsWith('deployment kept in rotation') && l.deployment === 'a'));
    await store.enable(pool.name, 'b');
    await sleep(1100); // the "kept in rotation" answer stands a second
    for (let i = 0; i < 3; i++) await fail(health, store, pool, 'a');
    assert.equal((await stateOf(store, pool, 'a')).circuit, 'open', 'with b back, a is ejected');
  });

  test('rescue never puts a drained deployment back, and a drained one does not count as in rotation', async () => {
    const { pool, settings, store } = setup(['a', 'b', 'c'], { consecutiveFailures: 3 });
    const { health } = instance(store, settings);
    // a: drained, its circuit the soonest to reopen; b open; c drained with its circuit closed.
    await store.openCircuit(pool.name, 'a', 10_000);
    await store.openCircuit(pool.name, 'b', 20_000);
    await store.drain(pool.name, 'a');
    await store.drain(pool.name, 'c');
    assert.equal(await health.rescue(pool.layout, []), true, 'b is put back');
    const states = await store.snapshot(pool.layout);
    assert.deepEqual(
      states.map((d) => [d.id, d.circuit, d.drained]),
      [
        ['a', 'open', true],
        ['b', 'closed', false],
        ['c', 'closed', true],
      ],
    );
    assert.ok((await store.acquire({ pool: pool.layout, leaseId: randomUUID(), leaseMs: 1000, estimatedTokens: 0 })).ok);

    await store.drain(pool.name, 'b');
    assert.equal(await health.rescue(pool.layout, []), false, 'all drained: nothing to put back');
    assert.equal((await stateOf(store, pool, 'a')).circuit, 'open', 'a stays as it was');
  });

  test('a reset made through another instance makes the next ejection a first again', async () => {
    const { pool, settings, store } = setup(['a', 'b'], { consecutiveFailures: 2, baseEjectionMs: 400, maxEjectionMs: 5000 });
    const { health } = instance(store, settings);
    // How long the circuit was opened for, bracketed by the times before and after the act (one machine, one clock).
    const openedFor = async (act: () => Promise<void>, expected: number, what: string) => {
      const before = Date.now();
      await act();
      const after = Date.now();
      const state = await stateOf(store, pool, 'a');
      assert.equal(state.circuit, 'open', what);
      const [least, most] = [state.circuitOpenUntil - after, state.circuitOpenUntil - before];
      assert.ok(least - 5 <= expected && expected <= most + 5, `${what}: ${expected} ms, opened for ${least}…${most} ms`);
    };
    const twice = async () => {
      await fail(health, store, pool, 'a');
      await fail(health, store, pool, 'a');
    };
    await openedFor(twice, 400, 'the first ejection: base');
    const probe = await probeOn(store, pool, 'a');
    await openedFor(() => fail(health, store, pool, 'a', 'status', probe), 800, 'its probe failed: twice base');
    // Another instance's operator: this instance hears of it from the store alone.
    await store.reset(pool.name, 'a');
    assert.equal((await stateOf(store, pool, 'a')).circuit, 'closed');
    await openedFor(twice, 400, 'after the reset, base again (not 3 × base)');
  });

  test('the pool’s view is the cluster’s: what another instance ejected counts as out', async () => {
    const { pool, settings, store } = setup(['a', 'b'], { consecutiveFailures: 3, baseEjectionMs: 20_000 });
    const x = instance(store, settings);
    const y = instance(store, settings);
    for (let i = 0; i < 3; i++) await fail(x.health, store, pool, 'a');
    assert.equal((await stateOf(store, pool, 'a')).circuit, 'open', 'x ejected a');
    // y never ejected anything itself: only the store can tell it that b is the pool's last.
    for (let i = 0; i < 3; i++) await fail(y.health, store, pool, 'b');
    assert.equal((await stateOf(store, pool, 'b')).circuit, 'closed');
    assert.ok(y.lines.some((l) => l.message.startsWith('deployment kept in rotation') && l.deployment === 'b'));
  });
});
