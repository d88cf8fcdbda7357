/**
 * No work from the past: a script call that the RedisStore's client gave up on (its commandTimeout
 * passed while a private redis-server was frozen by SIGSTOP) changes nothing when Redis runs it after
 * SIGCONT: no lease, no reservation, no quota booking, no queue place, no renewal, no observation. A
 * control with the deadline check off shows the phantom state the check prevents, and instance clocks
 * skewed by an hour show that the deadline is expressed in Redis's clock.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { KeyLayout } from '../../shared/store/keys.ts';
import { LateCallError, RedisStore, STORE_REDIS_OPTIONS, type RedisStoreOptions } from '../../shared/store/redis-store.ts';
import type { AcquireResult, QuotaResult } from '../../shared/store/types.ts';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.ts';
import { granted, pool, quotaGranted, quotaRefused, refused, uniquePrefix } from '../helpers/store-suite.ts';

/** Short, so that a freeze outlasts it quickly; far above a script's run time on a loaded machine. */
const COMMAND_TIMEOUT_MS = 300;
const HOUR_MS = 3_600_000;
const LATE_ACQUIRES = 50;
/** Background acquires (Batch API lines) among them: the same rule. */
const LATE_BACKGROUND = 10;
const LATE_QUOTAS = 20;
const LATE_WAITERS = 5;

const monotonicNow = () => performance.timeOrigin + performance.now();

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** What the state says after the late calls ran, and whether new calls work. */
interface Outcome {
  inFlight: number;
  tokensInWindow: number;
  requestsInWindow: number;
  /** A booking of the client's whole tpm, made after the late ones ran. */
  quota: QuotaResult;
  /** A new waiter's acquire once its pool has room again. */
  waiter: AcquireResult;
  /** How long the lease that a late renew targeted still has to live (ms, Redis clock). */
  renewedLeaseLeftMs: number;
  /** A new acquire after everything. */
  fresh: AcquireResult;
}

describe('calls that timed out while Redis was frozen', () => {
  let server: RedisServer;
  let admin: Redis;
  const opened: { store: RedisStore; client: Redis }[] = [];

  before(async () => {
    server = await startRedisServer();
    admin = new Redis(server.url);
  });

  after(async () => {
    server.process.kill('SIGCONT');
    for (const { store, client } of opened) {
      await store.close();
      client.disconnect();
    }
    admin.disconnect();
    await server.stop();
  });

  /** A store on a client of its own that gives up after COMMAND_TIMEOUT_MS; with deadlines, once it has a clock estimate. */
  async function openStore(
    options: Omit<RedisStoreOptions, 'keyPrefix' | 'windowMs'> = {},
  ): Promise<{ store: RedisStore; keys: KeyLayout }> {
    const client = new Redis(server.url, { ...STORE_REDIS_OPTIONS, commandTimeout: COMMAND_TIMEOUT_MS });
    client.on('error', () => {});
    const keyPrefix = uniquePrefix();
    const store = new RedisStore(client, { keyPrefix, windowMs: 60_000, ...options });
    opened.push({ store, client });
    const deadline = performance.now() + 5000;
    while (!(await store.ping()) || (options.checkDeadlines !== false && store.clockOffsetMs === undefined)) {
      assert.ok(performance.now() < deadline, 'the store measured no clock offset within 5 s');
      await sleep(20);
    }
    return { store, keys: new KeyLayout(keyPrefix) };
  }

  /** Freezes Redis, fires the calls, waits until every one has been given up on, and lets Redis run them. */
  async function whileFrozen(calls: () => Promise<unknown>[]): Promise<void> {
    server.process.kill('SIGSTOP');
    try {
      const settled = await within(Promise.allSettled(calls()), 5000, 'the calls to time out');
      for (const result of settled) {
        assert.equal(result.status, 'rejected', 'every call made while Redis was frozen was given up on');
        assert.match(String((result as PromiseRejectedResult).reason), /timed out/);
      }
      // Redis's clock moves well past the deadlines (further than an estimate could be off).
      await sleep(200);
    } finally {
      server.process.kill('SIGCONT');
    }
  }

  async function redisNowMs(): Promise<number> {
    const [seconds, micros] = await admin.time();
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  }

  /**
   * Before the freeze: a pool filled to its tpm (so waiters would queue), and a lease a late renew
   * targets. Frozen: acquires, quota bookings, waiters, a renew, an observation. Then what is left.
   */
  async function freezeScenario(store: RedisStore, keys: KeyLayout): Promise<Outcome> {
    const layout = pool('late', 'least-requests', [
      { id: 'a', tpm: 1_000_000 },
      { id: 'b', tpm: 1_000_000 },
    ]);
    const full = pool('full', 'least-requests', [{ id: 'only', tpm: 100 }]);
    const kept = pool('kept', 'least-requests', [{ id: 'k' }]);
    const filler = granted(await store.acquire({ pool: full, leaseId: 'filler', leaseMs: 30_000, estimatedTokens: 100 }));
    const held = granted(await store.acquire({ pool: kept, leaseId: 'held', leaseMs: 10_000, estimatedTokens: 0 }));

    await whileFrozen(() => [
      ...Array.from({ length: LATE_ACQUIRES }, (_, i) =>
        store.acquire({
          pool: layout,
          leaseId: `late-${i}`,
          leaseMs: 30_000,
          estimatedTokens: 100,
          ...(i < LATE_BACKGROUND ? { background: { reserve: 0.3 } } : {}),
        }),
      ),
      ...Array.from({ length: LATE_QUOTAS }, () => store.acquireQuota({ subject: 'team', tpm: 1000, rpm: 100, estimatedTokens: 50 })),
      ...Array.from({ length: LATE_WAITERS }, (_, i) =>
        store.acquire({
          pool: full,
          leaseId: `waiter-${i}`,
          leaseMs: 30_000,
          estimatedTokens: 50,
          queue: { ticket: `w-${i}`, ttlMs: 30_000 },
        }),
      ),
      store.renew([held], 60_000),
      store.observe('late', 'a', { tpm: 1_000_000, remainingTokens: 0 }),
    ]);

    // Sent after SIGCONT on the same connection, so Redis answers them after running the late calls.
    const snapshot = await store.snapshot(layout);
    const quota = await store.acquireQuota({ subject: 'team', tpm: 1000, rpm: 100, estimatedTokens: 1000 });
    await store.release(filler, 0);
    const waiter = await store.acquire({
      pool: full,
      leaseId: 'waiter-new',
      leaseMs: 30_000,
      estimatedTokens: 50,
      queue: { ticket: 'w-new', ttlMs: 30_000 },
    });
    const heldUntil = Number(await admin.zscore(keys.deployment('kept', 'k').leases, 'held'));
    const renewedLeaseLeftMs = heldUntil - (await redisNowMs());
    const fresh = await store.acquire({ pool: layout, leaseId: 'fresh', leaseMs: 30_000, estimatedTokens: 100 });
    return {
      inFlight: snapshot.reduce((sum, d) => sum + d.inFlight, 0),
      tokensInWindow: snapshot.reduce((sum, d) => sum + d.tokensInWindow, 0),
      requestsInWindow: snapshot.reduce((sum, d) => sum + d.requestsInWindow, 0),
      quota,
      waiter,
      renewedLeaseLeftMs,
      fresh,
    };
  }

  function assertNothingFromThePast(outcome: Outcome): void {
    assert.equal(outcome.inFlight, 0, 'no phantom leases');
    assert.equal(outcome.tokensInWindow, 0, 'no reservations, no late observation');
    assert.equal(outcome.requestsInWindow, 0, 'no requests booked');
    const quota = quotaGranted(outcome.quota);
    assert.equal(quota.remainingTokens, 0, 'the whole tpm was still free');
    assert.equal(quota.remainingRequests, 99, 'no request was booked');
    assert.equal(granted(outcome.waiter).deploymentId, 'only', 'no late waiter holds a place ahead of a new one');
    assert.ok(outcome.renewedLeaseLeftMs <= 10_000, `the late renew did not push the lease (${outcome.renewedLeaseLeftMs} ms left)`);
    assert.ok(granted(outcome.fresh).deploymentId, 'new acquires work');
  }

  test(
    'book nothing when Redis runs them after SIGCONT: no leases, reservations, quota, queue places, renewals',
    { timeout: 10_000 },
    async () => {
      const { store, keys } = await openStore();
      assertNothingFromThePast(await freezeScenario(store, keys));
      const latest = await store.snapshot(pool('late', 'least-requests', [{ id: 'a' }, { id: 'b' }]));
      assert.equal(
        latest.reduce((sum, d) => sum + d.inFlight, 0),
        1,
        'only the new acquire is in flight',
      );
    },
  );

  test('control: without deadlines the same calls leave phantom leases and bookings', { timeout: 10_000 }, async () => {
    const { store, keys } = await openStore({ checkDeadlines: false });
    const outcome = await freezeScenario(store, keys);
    assert.equal(outcome.inFlight, LATE_ACQUIRES, 'every late acquire holds a lease nobody releases');
    assert.ok(outcome.tokensInWindow >= LATE_ACQUIRES * 100, `late reservations booked (${outcome.tokensInWindow})`);
    assert.equal(outcome.requestsInWindow, LATE_ACQUIRES);
    assert.equal(quotaRefused(outcome.quota).reason, 'tokens', 'the late quota bookings took the whole tpm');
    assert.equal(refused(outcome.waiter).reason, 'queued', 'late waiters queue ahead of a new one');
    assert.ok(outcome.renewedLeaseLeftMs > 30_000, `the late renew pushed the lease (${outcome.renewedLeaseLeftMs} ms left)`);
  });

  test('an instance clock an hour ahead: late calls are still refused (the deadline is in Redis time)', { timeout: 10_000 }, async () => {
    const { store, keys } = await openStore({ now: () => monotonicNow() + HOUR_MS });
    const offset = store.clockOffsetMs;
    assert.ok(offset !== undefined && Math.abs(offset + HOUR_MS) < 1000, `offset estimate ${offset} ≈ -1 h`);
    // Were the deadline taken from this clock, it would lie an hour in Redis's future and every late call would run.
    assertNothingFromThePast(await freezeScenario(store, keys));
  });

  test('an instance clock an hour behind: timely calls are carried out (the deadline is in Redis time)', { timeout: 10_000 }, async () => {
    const { store } = await openStore({ now: () => monotonicNow() - HOUR_MS });
    const offset = store.clockOffsetMs;
    assert.ok(offset !== undefined && Math.abs(offset - HOUR_MS) < 1000, `offset estimate ${offset} ≈ +1 h`);
    // Were the deadline taken from this clock, it would lie an hour in Redis's past and every call would be refused.
    const layout = pool('behind', 'round-robin', [{ id: 'a', tpm: 1000 }]);
    const lease = granted(await store.acquire({ pool: layout, leaseId: 'l1', leaseMs: 30_000, estimatedTokens: 10 }));
    await store.renew([lease], 30_000);
    quotaGranted(await store.acquireQuota({ subject: 'behind', tpm: 100, estimatedTokens: 10 }));
    await store.observe('behind', 'a', { tpm: 1000, remainingTokens: 900 });
    const [state] = await store.snapshot(layout);
    assert.equal(state?.inFlight, 1);
    assert.equal(state?.tokensInWindow, 100, 'the observation was applied');
  });

  test(
    'a call that reaches Redis past its deadline while its caller still waits rejects, and changes nothing',
    { timeout: 10_000 },
    async () => {
      let shiftMs = 0;
      const { store } = await openStore({ now: () => monotonicNow() + shiftMs });
      const layout = pool('waiting', 'least-requests', [{ id: 'a', tpm: 1000 }]);
      const lease = granted(await store.acquire({ pool: layout, leaseId: 'l1', leaseMs: 30_000, estimatedTokens: 0 }));
      // From now on the store's estimate is 5 s off: every deadline it sends lies in Redis's past, as a call
      // that took that long to arrive would find. (The estimate is fresh, so the store does not refresh it.)
      shiftMs = -5000;
      await assert.rejects(store.acquire({ pool: layout, leaseId: 'l2', leaseMs: 30_000, estimatedTokens: 10 }), LateCallError);
      await assert.rejects(
        store.acquire({ pool: layout, leaseId: 'l3', leaseMs: 30_000, estimatedTokens: 10, background: { reserve: 0.3 } }),
        LateCallError,
      );
      await assert.rejects(store.acquireQuota({ subject: 'waiting', tpm: 100, estimatedTokens: 10 }), LateCallError);
      await assert.rejects(store.renew([lease], 30_000), LateCallError);
      // Not a booking: an observation is skipped, the lease still ends and its charge still counts.
      await store.observe('waiting', 'a', { tpm: 1000, remainingTokens: 0 });
      await store.release(lease, 7);
      const [state] = await store.snapshot(layout);
      assert.equal(state?.inFlight, 0, 'the release ended the lease');
      assert.equal(state?.tokensInWindow, 7, 'its charge counts; no late reservation, no late observation');
      assert.equal(state?.requestsInWindow, 1, 'only the first acquire');
      shiftMs = 0;
      quotaGranted(await store.acquireQuota({ subject: 'waiting', tpm: 100, estimatedTokens: 100 }));
    },
  );
});
