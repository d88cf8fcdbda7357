/**
 * Lease work that does not grow with what is in flight (issue 14), on a private redis-server with every
 * command logged (SLOWLOG, slowlog-log-slower-than 0): a renewal of 20 000 leases runs as bounded
 * scripts with another client's commands answered between them, and the leases of an instance killed
 * with SIGKILL stop counting within one lease time although nothing reaps every deployment on every call.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { RENEW_BATCH } from '../../shared/store/constants.ts';
import { KeyLayout } from '../../shared/store/keys.ts';
import { luaScripts } from '../../shared/store/lua-scripts.ts';
import { RedisStore } from '../../shared/store/redis-store.ts';
import type { Lease } from '../../shared/store/types.ts';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.ts';
import { granted, pool, uniquePrefix } from '../helpers/store-suite.ts';

const LEASES = 20_000;
/** Generous against a loaded 2-core machine (one call measures well under 2 ms, loadtest/scale/store-cost.ts); one script for every lease took ~100 ms. */
const LONGEST_RENEW_US = 25_000;

interface LoggedCommand {
  id: number;
  durationUs: number;
  args: string[];
  client: string;
}

describe('lease work bounded whatever is in flight', () => {
  let server: RedisServer;
  let admin: Redis;

  before(async () => {
    server = await startRedisServer();
    admin = new Redis(server.url);
    await admin.config('SET', 'slowlog-max-len', '1000000');
  });

  after(async () => {
    admin.disconnect();
    await server.stop();
  });

  async function logged(): Promise<LoggedCommand[]> {
    const raw = (await admin.call('SLOWLOG', 'GET', '-1')) as unknown[][];
    return raw
      .map((entry) => ({
        id: Number(entry[0]),
        durationUs: Number(entry[2]),
        args: (entry[3] as unknown[]).map(String),
        client: String(entry[5]),
      }))
      .sort((x, y) => x.id - y.id);
  }

  test(`a renewal of ${LEASES} leases runs as bounded scripts, another client answered between them`, { timeout: 120_000 }, async () => {
    const keyPrefix = uniquePrefix();
    const store = new RedisStore(server.url, { keyPrefix });
    const other = new Redis(server.url, { connectionName: 'other-instance' });
    try {
      const layout = pool(
        'busy',
        'least-requests',
        // 7, not a divisor of the leases: batches then mix deployments and cut one's leases in two.
        Array.from({ length: 7 }, (_, i) => ({ id: `d${i}` })),
      );
      const leases: Lease[] = [];
      for (let done = 0; done < LEASES; done += 500) {
        const results = await Promise.all(
          Array.from({ length: 500 }, () => store.acquire({ pool: layout, leaseId: randomUUID(), leaseMs: 60_000, estimatedTokens: 0 })),
        );
        leases.push(...results.map(granted));
      }
      const keys = new KeyLayout(keyPrefix);
      const sample = leases[LEASES - 1]!;
      const sampleKey = keys.deployment('busy', sample.deploymentId).leases;
      const before = Number(await admin.zscore(sampleKey, sample.leaseId));

      await store.renew([sample], 60_000); // the script is loaded: EVALSHA from here on
      await admin.config('SET', 'slowlog-log-slower-than', '0');
      await admin.call('SLOWLOG', 'RESET');
      // Another instance's small commands, one after another, for as long as the renewal runs.
      let renewing = true;
      const answered = (async () => {
        let count = 0;
        while (renewing) {
          await other.ping();
          count += 1;
        }
        return count;
      })();
      await sleep(20);
      await store.renew(leases, 120_000);
      renewing = false;
      await answered;
      await admin.config('SET', 'slowlog-log-slower-than', '10000');

      const commands = await logged();
      const renewSha = createHash('sha1').update(luaScripts().renew).digest('hex');
      const renewals = commands.filter((c) => c.args[1] === renewSha);
      assert.equal(renewals.length, Math.ceil(LEASES / RENEW_BATCH), 'one script per batch of leases');
      const longest = Math.max(...renewals.map((c) => c.durationUs));
      assert.ok(longest < LONGEST_RENEW_US, `the longest renew script held Redis ${longest} µs`);
      // Between consecutive renew scripts, Redis answered the other client.
      const pings = commands.filter((c) => c.client === 'other-instance' && c.args[0]?.toUpperCase() === 'PING').map((c) => c.id);
      let gapsServed = 0;
      for (let i = 1; i < renewals.length; i++) {
        const [from, to] = [renewals[i - 1]!.id, renewals[i]!.id];
        if (pings.some((id) => id > from && id < to)) gapsServed += 1;
      }
      assert.ok(gapsServed >= (renewals.length - 1) / 2, `the other client was answered in ${gapsServed} of ${renewals.length - 1} gaps`);

      const afterRenewal = Number(await admin.zscore(sampleKey, sample.leaseId));
      assert.ok(afterRenewal >= before + 59_000, `the last lease was renewed too: ${before} → ${afterRenewal}`);
      // Every lease, not just one: the earliest deadline of each deployment moved as far.
      for (const deployment of layout.deployments) {
        const [, earliest] = await admin.zrange(keys.deployment('busy', deployment.id).leases, 0, 0, 'WITHSCORES');
        assert.ok(Number(earliest) >= before + 59_000, `every lease of ${deployment.id} was renewed: earliest ${earliest}`);
      }
      const snapshot = await store.snapshot(layout);
      assert.equal(
        snapshot.reduce((sum, d) => sum + d.inFlight, 0),
        LEASES,
      );
    } finally {
      other.disconnect();
      await store.close();
    }
  });

  test('the leases of an instance killed with SIGKILL stop counting within one lease time', { timeout: 30_000 }, async () => {
    const keyPrefix = uniquePrefix();
    const leaseMs = 600;
    const held = 20;
    const storeModule = new URL('../../shared/store/redis-store.ts', import.meta.url).href;
    // The other instance: holds leases on a and renews them every leaseMs / 3, as the lease keeper does.
    const instance = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `
        import { RedisStore } from ${JSON.stringify(storeModule)};
        const store = new RedisStore(${JSON.stringify(server.url)}, { keyPrefix: ${JSON.stringify(keyPrefix)} });
        const layout = { name: 'killed', strategy: 'least-requests', deployments: [{ id: 'a', priority: 1, weight: 1 }, { id: 'b', priority: 1, weight: 1 }] };
        const leases = [];
        for (let i = 0; i < ${held}; i++) {
          const result = await store.acquire({ pool: layout, leaseId: 'held-' + i, leaseMs: ${leaseMs}, estimatedTokens: 0, exclude: ['b'] });
          leases.push(result.lease);
        }
        setInterval(() => void store.renew(leases, ${leaseMs}), ${leaseMs / 3});
        console.log('held');
        `,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const store = new RedisStore(server.url, { keyPrefix });
    try {
      const lines = createInterface({ input: instance.stdout! })[Symbol.asyncIterator]();
      assert.equal((await lines.next()).value, 'held');
      const layout = pool('killed', 'least-requests', [{ id: 'a' }, { id: 'b' }]);
      await sleep(leaseMs * 2); // past the first deadline: only its renewals keep the leases
      assert.equal((await store.snapshot(layout))[0]?.inFlight, held, 'a live instance keeps its leases');
      for (let i = 0; i < 3; i++) {
        assert.equal(
          granted(await store.acquire({ pool: layout, leaseId: `mine-${i}`, leaseMs: 30_000, estimatedTokens: 0 })).deploymentId,
          'b',
        );
      }

      instance.kill('SIGKILL');
      await new Promise((resolve) => instance.once('exit', resolve));
      const killedAt = performance.now();
      // Within a lease time (plus a renewal period of slack and a margin) its leases no longer count:
      // least-requests sends the next request to a, which holds none now, not to b, which holds 3.
      let pickedA = false;
      while (!pickedA && performance.now() - killedAt < leaseMs + leaseMs / 3 + 500) {
        await sleep(50);
        const lease = granted(await store.acquire({ pool: layout, leaseId: randomUUID(), leaseMs: 30_000, estimatedTokens: 0 }));
        pickedA = lease.deploymentId === 'a';
        if (!pickedA) await store.release(lease);
      }
      assert.ok(pickedA, 'the killed instance’s leases still counted after a lease time');
      assert.deepEqual(
        (await store.snapshot(layout)).map((d) => d.inFlight),
        [1, 3],
      );
      const aLeases = new KeyLayout(keyPrefix).deployment('killed', 'a').leases;
      assert.equal(await admin.zcard(aLeases), 1, 'the dead leases were removed, once');
      const counts = await admin.hgetall(new KeyLayout(keyPrefix).inflight('killed'));
      assert.equal(counts[aLeases], '1', 'the in-flight hash counts the live lease only');
    } finally {
      if (instance.exitCode === null && instance.signalCode === null) instance.kill('SIGKILL');
      await store.close();
    }
  });
});
