import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { MemoryStore } from '../../../shared/store/memory-store.ts';
import type { Store } from '../../../shared/store/types.ts';
import { Metrics } from '../../../gateway/metrics.ts';
import { ClientQuotas, hasQuota, type QuotaCheck } from '../../../gateway/routing/client-quota.ts';
import { LiveStore } from '../../../gateway/routing/live-store.ts';
import type { ClientIdentity } from '../../../gateway/routing/proxied-request.ts';
import { memoryLogger, quietLogger, redisStore, unreachableStore } from '../../helpers/collaborators.ts';
import { uniquePool } from '../../helpers/fixtures.ts';

const opened: Store[] = [];
after(async () => {
  await Promise.all(opened.map((store) => store.close()));
});

/** Client quotas on a RedisStore of their own (a fresh key prefix), as the gateway publishes them. */
function quotas(shared: Store = redisStore(), logger = quietLogger()): { quotas: ClientQuotas; shared: Store } {
  const fallback = new MemoryStore();
  opened.push(shared, fallback);
  return { quotas: new ClientQuotas(new LiveStore(shared, fallback, new Metrics(false), logger), logger), shared };
}

const client = (limits: Omit<ClientIdentity, 'name'>): ClientIdentity => ({ name: uniquePool('client'), ...limits });

function admitted(check: QuotaCheck) {
  assert.ok(check.admitted, `expected admission, got ${check.admitted ? '' : JSON.stringify(check.error)}`);
  return check;
}

function refused(check: QuotaCheck) {
  assert.ok(!check.admitted, `expected a refusal, got an admission with ${JSON.stringify(check.remaining)}`);
  return check;
}

describe('ClientQuotas', () => {
  test('hasQuota: a client with a tpm or an rpm', () => {
    assert.equal(hasQuota({ name: 'a' }), false);
    assert.equal(hasQuota({ name: 'a', tpm: 100 }), true);
    assert.equal(hasQuota({ name: 'a', rpm: 1 }), true);
  });

  test('admits with what remains of each budget', async () => {
    const { quotas: q } = quotas();
    const team = client({ tpm: 1000, rpm: 5 });
    const first = admitted(await q.check(team, 300));
    assert.ok(first.booking, 'a booking to settle');
    assert.deepEqual(first.remaining, { tokens: 700, requests: 4 });
    assert.deepEqual(admitted(await q.check(team, 200)).remaining, { tokens: 500, requests: 3 });
    // An unlimited budget has no remaining figure.
    assert.deepEqual(admitted(await q.check(client({ rpm: 2 }), 10_000)).remaining, { tokens: undefined, requests: 1 });
  });

  test('refuses over rpm with an Azure-shaped 429 and a retry time', async () => {
    const { quotas: q } = quotas();
    const team = client({ rpm: 2 });
    admitted(await q.check(team, 0));
    admitted(await q.check(team, 0));
    const check = refused(await q.check(team, 0));
    assert.deepEqual(check.remaining, { tokens: undefined, requests: 0 });
    const { error } = check;
    assert.equal(error.status, 429);
    assert.equal(error.code, '429');
    assert.match(error.message, new RegExp(`Client ${team.name} has exceeded its request rate limit`));
    const ms = Number(error.headers?.['retry-after-ms']);
    // The two bookings leave the one-minute window within a minute.
    assert.ok(ms > 0 && ms <= 60_000, `retry-after-ms ${ms}`);
    assert.equal(error.headers?.['retry-after'], String(Math.ceil(ms / 1000)));
    assert.match(error.message, new RegExp(`retry after ${Math.ceil(ms / 1000)} second`));
  });

  test('refuses over tpm naming the token limit', async () => {
    const { quotas: q } = quotas();
    const team = client({ tpm: 500 });
    admitted(await q.check(team, 400));
    const check = refused(await q.check(team, 200));
    assert.match(check.error.message, /exceeded its token rate limit/);
    assert.deepEqual(check.remaining, { tokens: 100, requests: undefined });
  });

  test('settle corrects the booked estimate to the real cost; undefined keeps it', async () => {
    const { quotas: q } = quotas();
    const team = client({ tpm: 1000 });
    const booking = admitted(await q.check(team, 600)).booking!;
    await booking.settle(50);
    // 950 left: a request the estimate would have refused now fits.
    assert.deepEqual(admitted(await q.check(team, 900)).remaining, { tokens: 50, requests: undefined });
    const keeping = client({ tpm: 1000 });
    await admitted(await q.check(keeping, 600)).booking!.settle(undefined);
    assert.deepEqual(refused(await q.check(keeping, 500)).remaining, { tokens: 400, requests: undefined }, 'the estimate stays booked');
    const other = client({ tpm: 1000 });
    const big = admitted(await q.check(other, 800)).booking!;
    await big.settle(1000);
    assert.deepEqual(refused(await q.check(other, 1)).remaining, { tokens: 0, requests: undefined }, 'corrected upwards too');
  });

  test('while the shared store fails, quotas are kept on this instance’s own view, not waived', async () => {
    const { logger } = memoryLogger();
    const { quotas: q } = quotas(await unreachableStore(), logger);
    const small = client({ tpm: 100, rpm: 5 });
    const booking = admitted(await q.check(small, 60)).booking;
    assert.ok(booking, 'booked in the fallback');
    assert.deepEqual(refused(await q.check(small, 60)).remaining, { tokens: 40, requests: 4 }, 'the first booking counts');
    await booking.settle(10);
    assert.equal(admitted(await q.check(small, 60)).remaining.tokens, 30, 'settled where it was booked');
  });

  test('a settlement the store fails is logged, not thrown', async () => {
    const { logger, lines } = memoryLogger();
    const shared = redisStore();
    const { quotas: q } = quotas(shared, logger);
    const booking = admitted(await q.check(client({ tpm: 1000 }), 100)).booking!;
    await shared.close();
    await booking.settle(5);
    assert.ok(lines.some((line) => line.level === 'warn' && line.message === 'client quota settlement failed'));
  });
});
