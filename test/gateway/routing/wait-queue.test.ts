import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, test } from 'node:test';
import { MemoryStore } from '../../../shared/store/memory-store.ts';
import type { AcquireResult, Store } from '../../../shared/store/types.ts';
import type { Pool } from '../../../gateway/pools.ts';
import type { Refusal } from '../../../gateway/routing/leasing.ts';
import { WaitTicket } from '../../../gateway/routing/wait-queue.ts';
import { memoryLogger, poolSetup, quietLogger, redisStore, unreachableStore } from '../../helpers/collaborators.ts';

const logger = quietLogger();
const refusal = (retryAfterMs: number): Refusal => ({ ok: false, reason: 'no-budget', retryAfterMs });

const opened: Store[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((store) => store.close()));
});

/** How long waitForRoom took, and what it said. */
async function timed(ticket: WaitTicket, retryAfterMs: number, saturated = true): Promise<{ ms: number; waits: boolean }> {
  const started = performance.now();
  const waits = await ticket.waitForRoom(refusal(retryAfterMs), saturated);
  return { ms: performance.now() - started, waits };
}

describe('WaitTicket', () => {
  test('no ticket when the pool does not let requests wait (maxWaitMs 0, the default)', async () => {
    const { pool } = poolSetup([{ id: 'a' }]);
    assert.equal(pool.config.maxWaitMs, 0);
    const ticket = new WaitTicket(pool, Date.now(), logger);
    assert.equal(ticket.enabled, false);
    assert.equal(ticket.queue, undefined);
    assert.equal((await timed(ticket, 50)).waits, false);
    ticket.waitsIn(new MemoryStore());
    await ticket.leave();
  });

  test('a ticket of its own per request, the same on every poll', () => {
    const { pool } = poolSetup([{ id: 'a' }], { pool: { maxWaitMs: 5000 } });
    const first = new WaitTicket(pool, Date.now(), logger);
    const second = new WaitTicket(pool, Date.now(), logger);
    assert.equal(first.enabled, true);
    assert.ok(first.queue && second.queue);
    assert.notEqual(first.queue.ticket, second.queue.ticket);
    assert.equal(first.queue, first.queue, 'one ticket for the request’s whole wait');
    assert.ok(first.queue.ttlMs > 100, 'it outlives the longest pause between polls');
  });

  test('waitForRoom says no at once when the pool is not saturated, or the wait is over', async () => {
    const { pool } = poolSetup([{ id: 'a' }], { pool: { maxWaitMs: 5000 } });
    const broken = await timed(new WaitTicket(pool, Date.now(), logger), 5000, false);
    assert.deepEqual([broken.waits, broken.ms < 50], [false, true], 'a broken pool is not waited for');
    const late = await timed(new WaitTicket(pool, Date.now() - 5000, logger), 5000);
    assert.deepEqual([late.waits, late.ms < 50], [false, true], 'maxWaitMs has passed');
  });

  // Timers fire up to a millisecond early (cached loop time) and late under load. So each bound is
  // checked on the quickest of a few sequential samples: early never, late not every time.
  async function quickest(samples: number, sleepOnce: () => Promise<{ ms: number; waits: boolean }>): Promise<number> {
    const times: number[] = [];
    for (let i = 0; i < samples; i++) {
      const { ms, waits } = await sleepOnce();
      assert.equal(waits, true);
      times.push(ms);
    }
    return Math.min(...times);
  }

  test('waitForRoom sleeps until the next poll: the refusal’s retry time, at least 10 ms, at most 100 ms', async () => {
    const { pool } = poolSetup([{ id: 'a' }], { pool: { maxWaitMs: 60_000 } });
    const ticket = new WaitTicket(pool, Date.now(), logger);
    const short = await quickest(5, () => timed(ticket, 1));
    assert.ok(short >= 9, `at least 10 ms, even when the store says 1 (${short})`);
    const middle = await quickest(5, () => timed(ticket, 40));
    assert.ok(middle >= 39 && middle < 90, `the retry time, 40 ms (${middle})`);
    const long = await quickest(3, () => timed(ticket, 30_000));
    assert.ok(long >= 99 && long < 1000, `at most 100 ms (${long})`);
  });

  test('waitForRoom never sleeps past the end of the wait, then says it is over', async () => {
    const { pool } = poolSetup([{ id: 'a' }], { pool: { maxWaitMs: 60_000 } });
    // 30 ms of the minute are left, for each of a few requests in turn.
    const last = await quickest(8, async () => {
      const ticket = new WaitTicket(pool, Date.now() - 60_000 + 30, logger);
      const result = await timed(ticket, 30_000);
      assert.equal((await timed(ticket, 30_000)).waits, false, 'and then the wait is over');
      return result;
    });
    assert.ok(last >= 9 && last < 90, `the 30 ms left, not a whole poll interval (${last})`);
  });
});

describe('WaitTicket.leave', () => {
  /** A pool whose one deployment is full (its tpm reserved by a held lease) and lets requests wait. */
  async function fullPool(...stores: Store[]): Promise<Pool> {
    const { pool } = poolSetup([{ id: 'a', tpm: 100 }], { pool: { maxWaitMs: 10_000 } });
    for (const store of stores) {
      const held = await store.acquire({ pool: pool.layout, leaseId: 'filler', leaseMs: 30_000, estimatedTokens: 100 });
      assert.ok(held.ok);
    }
    return pool;
  }

  const poll = (store: Store, pool: Pool, ticket: WaitTicket): Promise<AcquireResult> =>
    store.acquire({ pool: pool.layout, leaseId: randomUUID(), leaseMs: 30_000, estimatedTokens: 100, queue: ticket.queue });

  const reason = (result: AcquireResult) => (result.ok ? 'granted' : result.reason);

  for (const [kind, open] of [
    ['MemoryStore', () => new MemoryStore()],
    ['RedisStore', () => redisStore()],
  ] as const) {
    test(`takes the ticket out of the queue of the store it waits in (${kind})`, async () => {
      const store = open();
      // A second store where the same ticket also waits: leave() must not touch it.
      const other = new MemoryStore();
      opened.push(store, other);
      const pool = await fullPool(store, other);
      const first = new WaitTicket(pool, Date.now(), logger);
      const second = new WaitTicket(pool, Date.now(), logger);

      for (const s of [store, other]) {
        assert.equal(reason(await poll(s, pool, first)), 'no-budget', 'first in the queue');
        assert.equal(reason(await poll(s, pool, second)), 'queued', 'behind the first');
      }
      first.waitsIn(store);
      await first.leave();
      assert.equal(reason(await poll(store, pool, second)), 'no-budget', 'now at the head: nobody ahead of it');
      assert.equal(reason(await poll(other, pool, second)), 'queued', 'the queue it did not wait in is untouched');
    });
  }

  test('before any acquire (no store yet), leave does nothing', async () => {
    const store = new MemoryStore();
    opened.push(store);
    const pool = await fullPool(store);
    const first = new WaitTicket(pool, Date.now(), logger);
    const second = new WaitTicket(pool, Date.now(), logger);
    await poll(store, pool, first);
    await first.leave();
    assert.equal(reason(await poll(store, pool, second)), 'queued');
  });

  test('a store that fails while the ticket leaves is logged, not thrown', async () => {
    const { pool } = poolSetup([{ id: 'a' }], { pool: { maxWaitMs: 10_000 } });
    const { logger: log, lines } = memoryLogger();
    const broken = await unreachableStore();
    opened.push(broken);
    const ticket = new WaitTicket(pool, Date.now(), log);
    ticket.waitsIn(broken);
    await ticket.leave();
    assert.ok(lines.some((line) => line.level === 'warn' && line.message === 'could not leave the wait queue'));
  });
});
