/**
 * RedisStore on a real 3-master Redis Cluster (private redis-server --cluster-enabled processes): the
 * shared contract through ioredis's Cluster client as the gateway makes it (createStore with a cluster
 * target), plus what only a cluster has: where keys land, scripts on every master, and a slot that
 * moves while a store uses it (MOVED on a stale slot map, ASK/TRYAGAIN during the migration).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { createStore } from '../../shared/store/index.ts';
import { KeyLayout } from '../../shared/store/keys.ts';
import { luaScripts } from '../../shared/store/lua-scripts.ts';
import type { Store } from '../../shared/store/types.ts';
import {
  errorCount,
  keySlot,
  nodeId,
  nodeKeys,
  poolsOnEveryMaster,
  slotOwner,
  startTestRedisCluster,
  type TestRedisCluster,
} from '../helpers/redis-cluster.ts';
import { sleep } from '../helpers/fixtures.ts';
import { defineStoreSuite, granted, pool, quotaGranted, readsForOneTick, uniquePrefix } from '../helpers/store-suite.ts';
import { sharedByTheFile } from '../helpers/file-hooks.ts';

let cluster: TestRedisCluster;
sharedByTheFile(
  async () => {
    cluster = await startTestRedisCluster({ masters: 3 });
  },
  () => cluster?.stop(),
);

defineStoreSuite('RedisStore on a Redis Cluster', (options, instances) =>
  Array.from({ length: instances }, () => createStore({ redis: cluster.target, ...options })),
);

describe('RedisStore on a Redis Cluster: specifics', () => {
  const opened: Store[] = [];
  after(() => Promise.all(opened.map((store) => store.close())));
  function open(keyPrefix: string): Store {
    const store = createStore({ redis: cluster.target, keyPrefix, windowMs: 1200 });
    opened.push(store);
    return store;
  }

  test('a pool’s keys land in one slot on one master, pools spread over every master (called at once), a client’s quota in its own slot', async () => {
    const keyPrefix = uniquePrefix();
    const store = open(keyPrefix);
    const pools = await poolsOnEveryMaster(cluster, 'spread', 2);
    // Every pool at once, in the same tick: calls for different masters must not be sent as one batch.
    await Promise.all(
      [...pools.keys()].map(async (name) => {
        const layout = pool(name, 'round-robin', [{ id: 'a', tpm: 1000 }, { id: 'b' }]);
        const lease = granted(await store.acquire({ pool: layout, leaseId: `${name}-1`, leaseMs: 5000, estimatedTokens: 10 }));
        await store.release(lease, 20);
        granted(await store.acquire({ pool: layout, leaseId: `${name}-2`, leaseMs: 5000, estimatedTokens: 10 }));
        await store.cooldown(name, 'b', 3000);
      }),
    );
    quotaGranted(await store.acquireQuota({ subject: 'team:a', tpm: 100, estimatedTokens: 5 }));

    const masters = await cluster.masters();
    assert.equal(masters.length, 3);
    const admin = cluster.node(masters[0]!.port);
    const holders = new Map<string, Set<number>>();
    const slots = new Map<string, Set<number>>();
    for (const { port } of masters) {
      for (const key of await nodeKeys(cluster.node(port), `${keyPrefix}*`)) {
        const tag = /\{[^}]*\}/.exec(key)?.[0] ?? key;
        if (!holders.has(tag)) holders.set(tag, new Set());
        if (!slots.has(tag)) slots.set(tag, new Set());
        holders.get(tag)!.add(port);
        slots.get(tag)!.add(await keySlot(admin, key));
      }
    }
    for (const [name, master] of pools) {
      const tag = `{pool:${name}}`;
      assert.deepEqual([...(holders.get(tag) ?? [])], [master], `${name}: every key on the master of its slot`);
      assert.equal(slots.get(tag)?.size, 1, `${name}: one slot`);
    }
    assert.equal(new Set(pools.values()).size, 3, 'the pools use all three masters');
    assert.equal(holders.get('{client:team%3Aa}')?.size, 1, 'the client’s quota window is on one master');
  });

  test('scripts run on every master, each loaded there by the client itself (EVAL first on a connection, EVALSHA after)', async () => {
    const store = open(uniquePrefix());
    for (const name of (await poolsOnEveryMaster(cluster, 'spread', 2)).keys()) {
      await store.snapshot(pool(name, 'least-requests', [{ id: 'a' }]));
      granted(await store.acquire({ pool: pool(name, 'least-requests', [{ id: 'a' }]), leaseId: 'l', leaseMs: 1000, estimatedTokens: 0 }));
    }
    const sha = (script: string) => createHash('sha1').update(script).digest('hex');
    const scripts = luaScripts();
    for (const { port } of await cluster.masters()) {
      const known = (await cluster.node(port).call('SCRIPT', 'EXISTS', sha(scripts.acquire), sha(scripts.snapshot))) as number[];
      assert.deepEqual(known, [1, 1], `acquire and snapshot are in the script cache of the master on ${port}`);
    }
  });

  test('calls for pools on every master made in one tick reach each master in one write, each with its own answer', async () => {
    const store = open(uniquePrefix());
    const pools = await poolsOnEveryMaster(cluster, 'one-write');
    const layouts = [...pools.keys()].map((name) => pool(name, 'least-requests', [{ id: 'a' }, { id: 'b' }]));
    const reads = await readsForOneTick(
      store,
      layouts,
      6,
      [...pools.values()].map((port) => cluster.node(port)),
    );
    assert.ok(
      reads.every((count) => count >= 1 && count <= 2),
      `6 acquires per master in ${reads.join(', ')} reads`,
    );
  });

  test('a slot moved to another master while a store uses it: calls go on without an error, state moves with it', async () => {
    const keyPrefix = uniquePrefix();
    const store = open(keyPrefix);
    const name = 'migrating';
    const layout = pool(name, 'least-requests', [{ id: 'a' }, { id: 'b' }]);
    // The store learns the slot map now: after the move it is stale, and the old owner answers MOVED.
    const held = granted(await store.acquire({ pool: layout, leaseId: 'held', leaseMs: 30_000, estimatedTokens: 0, exclude: ['b'] }));
    await store.cooldown(name, 'b', 60_000);

    const admin = cluster.node(cluster.nodes[0]!.port);
    const slot = await keySlot(admin, new KeyLayout(keyPrefix).poolTag(name));
    const sourcePort = await slotOwner(admin, slot);
    const masters = await cluster.masters();
    const targetPort = masters.find(({ port }) => port !== sourcePort)!.port;
    const source = cluster.node(sourcePort);
    const target = cluster.node(targetPort);
    const [sourceId, targetId] = await Promise.all([nodeId(source), nodeId(target)]);
    // Counted on every master: a call sent again after TRYAGAIN goes to a random node, which may be the one answering MOVED.
    const moved = async () =>
      (await Promise.all(masters.map(({ port }) => errorCount(cluster.node(port), 'MOVED')))).reduce((x, y) => x + y, 0);
    const movedBefore = await moved();

    // Traffic all through the move: acquire, then release, again and again (bounded).
    let stop = false;
    const failures: string[] = [];
    let calls = 0;
    const traffic = (async () => {
      for (let i = 0; !stop && i < 2000; i++) {
        try {
          const result = await store.acquire({ pool: layout, leaseId: `t-${i}`, leaseMs: 30_000, estimatedTokens: 0 });
          const lease = granted(result);
          assert.equal(lease.deploymentId, 'a', 'b stays cooling down through the move');
          await store.release(lease);
          calls += 2;
        } catch (error) {
          failures.push((error as Error).message);
        }
      }
    })();

    // The move, as redis-cli --cluster reshard does it: importing/migrating, the keys, then the new owner everywhere.
    await target.call('CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', sourceId);
    await source.call('CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', targetId);
    for (;;) {
      const keys = (await source.call('CLUSTER', 'GETKEYSINSLOT', String(slot), '100')) as string[];
      if (keys.length === 0) break;
      await source.call('MIGRATE', '127.0.0.1', String(targetPort), '', '0', '5000', 'KEYS', ...keys);
    }
    for (const { port } of [
      { port: targetPort },
      { port: sourcePort },
      ...masters.filter((m) => m.port !== sourcePort && m.port !== targetPort),
    ])
      await cluster.node(port).call('CLUSTER', 'SETSLOT', String(slot), 'NODE', targetId);
    // Let the traffic meet the new owner through its stale map for a moment, then stop it.
    await sleep(300);
    stop = true;
    await traffic;

    assert.deepEqual(failures, [], 'no call failed');
    assert.ok(calls > 10, `traffic ran through the move (${calls} calls)`);
    assert.ok((await moved()) > movedBefore, 'a stale slot map met MOVED, and the client followed it');
    assert.equal(await slotOwner(admin, slot), targetPort, 'the slot is on the other master now');
    assert.ok((await nodeKeys(target, `${keyPrefix}*`)).length > 0, 'the pool’s keys are on the new master');
    assert.deepEqual(await nodeKeys(source, `${keyPrefix}*`), [], 'and none are left on the old one');
    const [a, b] = await store.snapshot(layout);
    assert.equal(a?.inFlight, 1, 'the lease held across the move still counts');
    assert.ok((b?.cooldownUntil ?? 0) > Date.now(), 'the cooldown moved with the slot');
    await store.release(held);
    assert.equal((await store.snapshot(layout))[0]?.inFlight, 0);
    assert.equal(store.connected?.(), true);
    assert.equal(await store.ping?.(), true);
  });
});
