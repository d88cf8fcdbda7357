import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { GatewaySettings } from '../../../shared/config/schema.ts';
import { MemoryStore } from '../../../shared/store/memory-store.ts';
import type { Lease, Store } from '../../../shared/store/types.ts';
import { Metrics } from '../../../gateway/metrics.ts';
import type { Deployment, Pool } from '../../../gateway/pools.ts';
import { CountedFailure, Health } from '../../../gateway/routing/health.ts';
import { LiveStore } from '../../../gateway/routing/live-store.ts';
import { memoryLogger, poolSetup, redisStore, unreachableStore, type LogLine } from '../../helpers/collaborators.ts';
import { until } from '../../helpers/fixtures.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Instance {
  health: Health;
  metrics: Metrics;
  lines: LogLine[];
}

/** One gateway instance's Health over `shared` (several instances may share one store). */
function instance(shared: Store, settings: GatewaySettings): Instance {
  const { logger, lines } = memoryLogger();
  const metrics = new Metrics(false);
  const health = new Health(new LiveStore(shared, new MemoryStore(), metrics, logger), settings, logger, metrics);
  cleanups.push(() => health.close());
  return { health, metrics, lines };
}

function setup(breaker: Record<string, number> = {}) {
  // The breaker at its schema defaults (volume threshold 5, 50 %), unless a test needs a short reset.
  const parts = poolSetup([{ id: 'a' }], { gateway: { breaker } });
  const store = redisStore();
  cleanups.push(() => store.close());
  return { ...parts, store, a: parts.deployment('a') };
}

async function leaseOn(store: Store, pool: Pool): Promise<Lease> {
  const result = await store.acquire({ pool: pool.layout, leaseId: randomUUID(), leaseMs: 30_000, estimatedTokens: 0 });
  assert.ok(result.ok, `expected a lease, got ${JSON.stringify(result)}`);
  return result.lease;
}

async function stateOf(store: Store, pool: Pool) {
  const [state] = await store.snapshot(pool.layout);
  assert.ok(state);
  return state;
}

/** One attempt that counts against the deployment, on a lease the store granted. */
async function failOnce(health: Health, store: Store, pool: Pool, deployment: Deployment): Promise<void> {
  const lease = await leaseOn(store, pool);
  const result = await health.guard(deployment, lease, async () => {
    throw new CountedFailure('503 from upstream');
  });
  assert.deepEqual(result, { outcome: '503 from upstream', failed: true });
  await store.release(lease);
}

/** Waits for the half-open circuit's one probe lease. */
async function probeLease(store: Store, pool: Pool): Promise<Lease> {
  let probe: Lease | undefined;
  await until(
    async () => {
      const result = await store.acquire({ pool: pool.layout, leaseId: randomUUID(), leaseMs: 30_000, estimatedTokens: 0 });
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
    const refusal = await store.acquire({ pool: pool.layout, leaseId: 'after-open', leaseMs: 30_000, estimatedTokens: 0 });
    assert.equal(refusal.ok, false, 'the store sends nobody there');
    assert.equal(refusal.ok ? undefined : refusal.reason, 'unavailable');
    assert.equal(await counter(metrics.circuitOpens, { pool: pool.name, deployment: 'a' }), 1);
    assert.ok(lines.some((line) => line.level === 'warn' && line.message.startsWith('circuit opened')));
  });

  test('successes resolve with their outcome and never open the circuit', async () => {
    const { pool, settings, store, a } = setup({ volumeThreshold: 1 });
    const { health } = instance(store, settings);
    const lease = await leaseOn(store, pool);
    for (let i = 0; i < 5; i++) assert.deepEqual(await health.guard(a, lease, async () => '200'), { outcome: '200', failed: false });
    await sleep(50);
    assert.equal((await stateOf(store, pool)).circuit, 'closed');
  });

  test('an error that is not a CountedFailure (a bug, not an outcome) is thrown as is', async () => {
    const { pool, settings, store, a } = setup();
    const { health } = instance(store, settings);
    const bug = new Error('a bug in the attempt');
    await assert.rejects(
      health.guard(a, await leaseOn(store, pool), async () => {
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
    const result = await health.guard(a, await leaseOn(store, pool), async () => ++ran);
    assert.deepEqual(result, { outcome: 1, failed: false });
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
    assert.deepEqual(await prober.health.guard(a, probe, async () => '200'), { outcome: '200', failed: false });
    const state = await stateOf(store, pool);
    assert.deepEqual([state.circuit, state.circuitOpenUntil], ['closed', 0], 'closed when guard returns');
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
    const result = await prober.health.guard(a, probe, async () => {
      throw new CountedFailure('timeout');
    });
    assert.deepEqual(result, { outcome: 'timeout', failed: true });
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
    const refusal = await store.acquire({ pool: pool.layout, leaseId: 'cooling', leaseMs: 30_000, estimatedTokens: 0 });
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
  test('publishing a cooldown, an open or a closed circuit never throws; each failure is logged', async () => {
    const { pool, settings, a } = setup();
    const broken = await unreachableStore();
    cleanups.push(() => broken.close());
    const { health, lines } = instance(broken, settings);
    const failures = async () => {
      for (let i = 0; i < settings.breaker.volumeThreshold; i++) {
        await health.guard(a, { pool: pool.name, deploymentId: 'a', leaseId: `l${i}`, bucket: 0, tokens: 0, probe: false }, async () => {
          throw new CountedFailure('502');
        });
      }
    };
    // All at once: each call to the unreachable store takes its own retry.
    const before = Date.now();
    const [until] = await Promise.all([
      health.throttled(a, 5000),
      failures(),
      health.guard(a, { pool: pool.name, deploymentId: 'a', leaseId: 'probe', bucket: 0, tokens: 0, probe: true }, async () => '200'),
    ]);
    assert.ok(until >= before + 5000 && until <= Date.now() + 5000, 'the cooldown’s end as this instance reckons it');
    for (const message of ['could not publish a cooldown', 'could not publish an open circuit', 'could not publish a closed circuit']) {
      await waitFor(lines, message);
    }
  });
});

async function waitFor(lines: LogLine[], message: string): Promise<void> {
  await until(() => lines.some((line) => line.level === 'warn' && line.message === message), 4000, `"${message}" to be logged`);
}
