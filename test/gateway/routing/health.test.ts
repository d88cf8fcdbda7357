import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { GatewaySettings } from '../../../shared/config/schema.ts';
import { MemoryStore } from '../../../shared/store/memory-store.ts';
import type { Lease, Store } from '../../../shared/store/types.ts';
import { Metrics } from '../../../gateway/metrics.ts';
import type { Deployment, Pool } from '../../../gateway/pools.ts';
import { CountedFailure, Health, type AnswerEnd, type GuardedLease } from '../../../gateway/routing/health.ts';
import { LiveStore } from '../../../gateway/routing/live-store.ts';
import { memoryLogger, poolSetup, redisStore, unreachableStore, type LogLine } from '../../helpers/collaborators.ts';
import { until } from '../../helpers/fixtures.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Instance {
  health: Health;
  stores: LiveStore;
  metrics: Metrics;
  lines: LogLine[];
}

/** One gateway instance's Health over `shared` (several instances may share one store). */
function instance(shared: Store, settings: GatewaySettings): Instance {
  const { logger, lines } = memoryLogger();
  const metrics = new Metrics(false);
  const stores = new LiveStore(shared, new MemoryStore(), metrics, logger);
  const health = new Health(stores, settings, logger, metrics);
  cleanups.push(() => health.close());
  return { health, stores, metrics, lines };
}

function setup(breaker: Record<string, number> = {}, outlier: Record<string, number> = {}) {
  // The breaker at its schema defaults (volume threshold 5, 50 %), unless a test needs a short reset.
  // The outlier detector off, so these tests see the breaker's rate alone. A second deployment 'b'
  // stays in rotation (Health never takes the last one of a pool out); every lease here is on 'a'.
  const parts = poolSetup([{ id: 'a' }, { id: 'b' }], { gateway: { breaker, outlier: { consecutiveFailures: 0, ...outlier } } });
  const store = redisStore();
  cleanups.push(() => store.close());
  return { ...parts, store, a: parts.deployment('a') };
}

/** A store's answer for deployment 'a' alone. */
function acquireA(store: Store, pool: Pool, leaseId: string = randomUUID()) {
  return store.acquire({ pool: pool.layout, leaseId, leaseMs: 30_000, estimatedTokens: 0, exclude: ['b'] });
}

async function leaseOn(store: Store, pool: Pool): Promise<Lease> {
  const result = await acquireA(store, pool);
  assert.ok(result.ok, `expected a lease, got ${JSON.stringify(result)}`);
  return result.lease;
}

/** A lease as the dispatcher holds it: on `deployment`, granted by `store`. */
function held(lease: Lease, deployment: Deployment, store: Store): GuardedLease {
  return { lease, deployment, store };
}

/** One attempt whose answer arrives and ends `how`; what guard said, without its `end`. */
async function answered<T>(health: Health, pool: Pool, lease: GuardedLease, outcome: T, how: AnswerEnd = 'whole') {
  const result = await health.guard(pool.layout, lease, async () => outcome);
  assert.ok(result, 'the breaker let it through');
  await result.end(how);
  return { outcome: result.outcome, failed: result.failed };
}

async function stateOf(store: Store, pool: Pool) {
  const [state] = await store.snapshot(pool.layout);
  assert.ok(state);
  return state;
}

/** One attempt that counts against the deployment, on a lease the store granted. */
async function failOnce(health: Health, store: Store, pool: Pool, deployment: Deployment): Promise<void> {
  const lease = await leaseOn(store, pool);
  const result = await health.guard(pool.layout, held(lease, deployment, store), async () => {
    throw new CountedFailure('503 from upstream');
  });
  assert.deepEqual([result?.outcome, result?.failed], ['503 from upstream', true]);
  await store.release(lease);
}

/** Waits for the half-open circuit's one probe lease. */
async function probeLease(store: Store, pool: Pool): Promise<Lease> {
  let probe: Lease | undefined;
  await until(
    async () => {
      const result = await acquireA(store, pool);
      if (result.ok) probe = result.lease;
      return result.ok;
    },
    3000,
    'the probe lease',
  );
  assert.equal(probe?.probe, true);
  return probe!;
}

async function counter(metric: Metrics['circuitOpens'] | Metrics['cooldowns'], labels: Record<string, string>): Promise<number> {
  const values = (await metric.get()).values;
  return values.find((v) => Object.entries(labels).every(([k, value]) => (v.labels as Record<string, unknown>)[k] === value))?.value ?? 0;
}

describe('Health.guard', () => {
  test('failures open the breaker at the volume threshold and publish the open circuit to every instance', async () => {
    const { pool, settings, store, a } = setup();
    const { health, metrics, lines } = instance(store, settings);
    const threshold = settings.breaker.volumeThreshold;
    for (let i = 0; i < threshold - 1; i++) await failOnce(health, store, pool, a);
    await sleep(50);
    assert.equal((await stateOf(store, pool)).circuit, 'closed', `not before ${threshold} attempts`);

    await failOnce(health, store, pool, a);
    await until(async () => (await stateOf(store, pool)).circuit === 'open', 2000, 'the open circuit in the store');
    const state = await stateOf(store, pool);
    const openMs = state.circuitOpenUntil - Date.now();
    assert.ok(
      openMs > settings.breaker.resetTimeoutMs - 5000 && openMs <= settings.breaker.resetTimeoutMs + 1000,
      `open for resetTimeoutMs (${openMs})`,
    );
    const refusal = await acquireA(store, pool, 'after-open');
    assert.equal(refusal.ok, false, 'the store sends nobody there');
    assert.equal(refusal.ok ? undefined : refusal.reason, 'unavailable');
    assert.equal(await counter(metrics.circuitOpens, { pool: pool.name, deployment: 'a' }), 1);
    assert.ok(lines.some((line) => line.level === 'warn' && line.message.startsWith('circuit opened')));
  });

  test('successes resolve with their outcome and never open the circuit', async () => {
    const { pool, settings, store, a } = setup({ volumeThreshold: 1 });
    const { health } = instance(store, settings);
    const lease = await leaseOn(store, pool);
    for (let i = 0; i < 5; i++)
      assert.deepEqual(await answered(health, pool, held(lease, a, store), '200'), { outcome: '200', failed: false });
    await sleep(50);
    assert.equal((await stateOf(store, pool)).circuit, 'closed');
  });

  test('an error that is not a CountedFailure (a bug, not an outcome) is thrown as is', async () => {
    const { pool, settings, store, a } = setup();
    const { health } = instance(store, settings);
    const bug = new Error('a bug in the attempt');
    await assert.rejects(
      health.guard(pool.layout, held(await leaseOn(store, pool), a, store), async () => {
        throw bug;
      }),
      (error) => error === bug,
    );
  });

  test('a lease the store granted runs even while this instance’s breaker is still open', async () => {
    const { pool, settings, store, a } = setup();
    const { health } = instance(store, settings);
    for (let i = 0; i < settings.breaker.volumeThreshold; i++) await failOnce(health, store, pool, a);
    await until(async () => (await stateOf(store, pool)).circuit === 'open', 2000, 'the open circuit');
    // The cluster closed it again (another instance's probe succeeded): this instance's older view must not veto.
    await store.closeCircuit(pool.name, 'a');
    let ran = 0;
    const result = await answered(health, pool, held(await leaseOn(store, pool), a, store), ++ran);
    assert.deepEqual(result, { outcome: 1, failed: false });
  });

  test('a lease of this instance’s own fallback view does not force its open breaker closed: not the cluster’s word', async () => {
    const { pool, settings, store, a } = setup();
    const { health, stores } = instance(store, settings);
    for (let i = 0; i < settings.breaker.volumeThreshold; i++) await failOnce(health, store, pool, a);
    await until(async () => (await stateOf(store, pool)).circuit === 'open', 2000, 'the open circuit');
    // The shared store is away, and this instance's fallback view granted 'a' (a lease as it grants them).
    const fallback: Lease = { pool: pool.name, deploymentId: 'a', leaseId: randomUUID(), bucket: 0, tokens: 0, probe: false };
    let ran = 0;
    assert.equal(await health.guard(pool.layout, held(fallback, a, stores.fallback), async () => ++ran), undefined, 'refused');
    assert.equal(ran, 0, 'the attempt never left');
    // The cluster's grant (its probe, or a circuit closed elsewhere) still runs.
    await store.closeCircuit(pool.name, 'a');
    assert.deepEqual(await answered(health, pool, held(await leaseOn(store, pool), a, store), 'ran'), { outcome: 'ran', failed: false });
  });

  test('the breaker hears of an attempt when its answer ends: bodies that break off open it, clients that leave do not', async () => {
    const { pool, settings, store, a } = setup();
    const { health, metrics } = instance(store, settings);
    const lease = await leaseOn(store, pool);
    for (let i = 0; i < 2 * settings.breaker.volumeThreshold; i++) {
      assert.deepEqual(await answered(health, pool, held(lease, a, store), '200', 'left'), { outcome: '200', failed: false });
    }
    await sleep(50);
    assert.equal((await stateOf(store, pool)).circuit, 'closed', 'clients leaving are nobody’s failure');
    // Headers that arrived well, then a body that broke off: failures, like a 5xx (past 50 % of the window's calls).
    for (let i = 0; i < 3 * settings.breaker.volumeThreshold; i++) await answered(health, pool, held(lease, a, store), '200', 'broke');
    await until(async () => (await stateOf(store, pool)).circuit === 'open', 2000, 'the open circuit');
    assert.equal(await counter(metrics.circuitOpens, { pool: pool.name, deployment: 'a', cause: 'breaker' }), 1);
  });

  test('the breaker never takes the last deployment of a pool in rotation out', async () => {
    const parts = poolSetup([{ id: 'only' }], { gateway: { outlier: { consecutiveFailures: 0 } } });
    const store = redisStore();
    cleanups.push(() => store.close());
    const { health, lines } = instance(store, parts.settings);
    const only = parts.deployment('only');
    for (let i = 0; i < 3 * parts.settings.breaker.volumeThreshold; i++) {
      const lease = await leaseOn(store, parts.pool);
      const result = await health.guard(parts.pool.layout, held(lease, only, store), async () => {
        throw new CountedFailure('503');
      });
      assert.equal(result?.failed, true, 'every attempt ran: the local breaker was not left open either');
      await store.release(lease);
    }
    await sleep(50);
    assert.equal((await stateOf(store, parts.pool)).circuit, 'closed');
    assert.ok(lines.some((l) => l.message.startsWith('deployment kept in rotation') && l.cause === 'breaker'));
  });

  test('a probe’s success closes the circuit for every instance', async () => {
    const { pool, settings, store, a } = setup({ resetTimeoutMs: 300 });
    const opener = instance(store, settings);
    for (let i = 0; i < settings.breaker.volumeThreshold; i++) await failOnce(opener.health, store, pool, a);
    await until(async () => (await stateOf(store, pool)).circuit === 'open', 2000, 'the open circuit');
    // Another instance gets the one probe once the circuit is half-open.
    const prober = instance(store, settings);
    const probe = await probeLease(store, pool);
    assert.equal((await stateOf(store, pool)).circuit, 'half-open');
    assert.deepEqual(await answered(prober.health, pool, held(probe, a, store), '200'), { outcome: '200', failed: false });
    const state = await stateOf(store, pool);
    assert.deepEqual([state.circuit, state.circuitOpenUntil], ['closed', 0], 'closed when the answer’s end is recorded');
    assert.ok(prober.lines.some((line) => line.message === 'probe succeeded: circuit closed'));
    await store.release(probe);
  });

  test('a probe’s failure opens the circuit again, even on an instance whose breaker saw no other failure', async () => {
    const { pool, settings, store, a } = setup({ resetTimeoutMs: 300 });
    const opener = instance(store, settings);
    for (let i = 0; i < settings.breaker.volumeThreshold; i++) await failOnce(opener.health, store, pool, a);
    await until(async () => (await stateOf(store, pool)).circuit === 'open', 2000, 'the open circuit');
    const prober = instance(store, settings);
    const probe = await probeLease(store, pool);
    const result = await prober.health.guard(pool.layout, held(probe, a, store), async () => {
      throw new CountedFailure('timeout');
    });
    assert.deepEqual([result?.outcome, result?.failed], ['timeout', true]);
    await until(async () => (await stateOf(store, pool)).circuit === 'open', 2000, 'the circuit open again');
    assert.equal(await counter(prober.metrics.circuitOpens, { pool: pool.name, deployment: 'a' }), 1);
    await store.release(probe);
  });
});

describe('Health.throttled', () => {
  test('publishes a cooldown for every instance and returns its end', async () => {
    const { pool, settings, store, a } = setup();
    const { health, metrics, lines } = instance(store, settings);
    const before = Date.now();
    const until = await health.throttled(a, 2000);
    assert.ok(until >= before + 1500 && until <= Date.now() + 2000 + 1000, `${until - before} ms from now`);
    assert.equal((await stateOf(store, pool)).cooldownUntil, until, 'the store holds the same end');
    assert.equal(await health.throttled(a, 500), until, 'a shorter one after it: the store’s longer end, not its own');
    const refusal = await acquireA(store, pool, 'cooling');
    assert.ok(!refusal.ok && refusal.reason === 'unavailable' && refusal.retryAfterMs <= 2000, JSON.stringify(refusal));
    assert.equal(await counter(metrics.cooldowns, { pool: pool.name, deployment: 'a', kind: 'rate' }), 2);
    const line = lines.find((l) => l.message === 'deployment throttled: cooling down');
    assert.equal(line?.level, 'warn');
    assert.deepEqual([line?.pool, line?.deployment, line?.cooldownMs], [pool.name, 'a', 2000]);
  });

  test('without a retry time from the deployment, the default cooldown', async () => {
    const { settings, store, a } = setup();
    const { health } = instance(store, settings);
    const before = Date.now();
    const until = await health.throttled(a, undefined);
    assert.ok(
      until - before >= settings.defaultCooldownMs - 500 && until - before <= settings.defaultCooldownMs + 1000,
      `${until - before}`,
    );
  });

  test('a cooldown of quotaExhaustedAfterMs or more is a quota exhaustion, logged as an error', async () => {
    const { pool, settings, store, a } = setup();
    const { health, metrics, lines } = instance(store, settings);
    await health.throttled(a, 86_400_000);
    await health.throttled(a, settings.quotaExhaustedAfterMs);
    await health.throttled(a, settings.quotaExhaustedAfterMs - 1);
    const exhausted = lines.filter((l) => l.message.startsWith('deployment quota exhausted'));
    assert.deepEqual(
      exhausted.map((l) => [l.level, l.cooldownMs]),
      [
        ['error', 86_400_000],
        ['error', settings.quotaExhaustedAfterMs],
      ],
    );
    assert.deepEqual(
      lines.filter((l) => l.message === 'deployment throttled: cooling down').map((l) => [l.level, l.cooldownMs]),
      [['warn', settings.quotaExhaustedAfterMs - 1]],
    );
    assert.equal(await counter(metrics.cooldowns, { pool: pool.name, deployment: 'a', kind: 'quota' }), 2);
    assert.equal(await counter(metrics.cooldowns, { pool: pool.name, deployment: 'a', kind: 'rate' }), 1);
    // Never shortened by a later, shorter one: the day stands.
    assert.ok((await stateOf(store, pool)).cooldownUntil - Date.now() > 86_000_000);
  });
});

describe('Health when the store fails', () => {
  test('with the shared store unreachable, a cooldown, an open or a closed circuit never throws and lands in the own view', async () => {
    const { pool, settings, a } = setup();
    const broken = await unreachableStore();
    cleanups.push(() => broken.close());
    const { health, lines, stores } = instance(broken, settings);
    const failures = async () => {
      for (let i = 0; i < settings.breaker.volumeThreshold; i++) {
        const lease = { pool: pool.name, deploymentId: 'a', leaseId: `l${i}`, bucket: 0, tokens: 0, probe: false };
        await health.guard(pool.layout, held(lease, a, broken), async () => {
          throw new CountedFailure('502');
        });
      }
    };
    // All at once: each call to the unreachable store takes its own retry.
    const before = Date.now();
    const [until] = await Promise.all([
      health.throttled(a, 5000),
      failures(),
      answered(
        health,
        pool,
        held({ pool: pool.name, deploymentId: 'a', leaseId: 'probe', bucket: 0, tokens: 0, probe: true }, a, broken),
        '200',
      ),
    ]);
    assert.ok(until >= before + 5000 && until <= Date.now() + 5000, 'the cooldown’s end as this instance reckons it');
    const [own] = (await stores.fallback.snapshot(pool.layout)).filter((d) => d.id === 'a');
    assert.ok(own && own.cooldownUntil >= until - 5, 'the cooldown is kept in this instance’s own view');
    assert.ok(
      lines.some((line) => line.level === 'warn' && String(line.message).startsWith('store unavailable')),
      'the outage is logged',
    );
  });
});
