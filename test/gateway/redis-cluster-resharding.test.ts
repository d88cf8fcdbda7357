/**
 * A pool's hash slot moved to another master while two instances route on it, the way
 * `redis-cli --cluster reshard` moves a slot: IMPORTING on the new owner, MIGRATING on the old, the
 * slot's keys moved a few at a time with MIGRATE, then SETSLOT NODE on every master. Meanwhile the
 * store's scripts meet the cluster's redirections: TRYAGAIN while a script's keys are split between
 * the two, ASK once they have left, MOVED once the slot is the new owner's and the client's map is
 * stale. Each is followed by ioredis (no auto-pipelining on a cluster: shared/store/redis-target.ts),
 * so clients see no error and neither instance gives up the shared state for its own view. Beside the
 * store's own slot move (test/store/redis-cluster-store.test.ts: one store, the keys in one MIGRATE,
 * MOVED), this keeps the slot half moved for a while and mixes in calls for a pool that stays.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { Redis } from 'ioredis';
import type { Simulator } from '../../shared/simulator/index.ts';
import { KeyLayout } from '../../shared/store/keys.ts';
import { chat, chatTraffic, simulator, sleep, until, type TrafficOutcome } from '../helpers/fixtures.ts';
import { testConfig, type RunningGateway } from '../helpers/gateway.ts';
import { metricValue } from '../helpers/metrics.ts';
import {
  errorCount,
  keySlot,
  nodeId,
  nodeKeys,
  poolsOnEveryMaster,
  slotOwner,
  startTestRedisCluster,
  twoGatewaysOn,
  type TestRedisCluster,
} from '../helpers/redis-cluster.ts';

const DEPLOYMENTS = ['first', 'second', 'third'];
const CLIENTS = 4;
/** Keys per MIGRATE, and the pause between two. */
const KEYS_PER_MIGRATE = 3;
const PAUSE_BETWEEN_MIGRATES_MS = 60;
/**
 * How long the slot is held half moved (keys split: TRYAGAIN) or emptied but not yet handed over (ASK)
 * until the cluster has answered that redirection. Without the hold, a 60 ms window could pass with
 * both instances' scripts asleep in ioredis's 100 ms TRYAGAIN retry, on a loaded CI machine.
 */
const HOLD_UNTIL_REDIRECTED_MS = 10_000;
/** Traffic before the move starts, and after it ended (the clients' slot maps are stale then: MOVED). */
const BEFORE_MOVE_MS = 300;
const AFTER_MOVE_MS = 1000;

/** A node's redirections since its stats were reset, and the ASKING commands that followed an ASK to it. */
async function redirections(node: Redis): Promise<{ ask: number; moved: number; tryagain: number; asking: number }> {
  const [ask, moved, tryagain] = await Promise.all(['ASK', 'MOVED', 'TRYAGAIN'].map((kind) => errorCount(node, kind)));
  const asking = Number(/cmdstat_asking:calls=(\d+)/.exec(String(await node.info('commandstats')))?.[1] ?? 0);
  return { ask: ask!, moved: moved!, tryagain: tryagain!, asking };
}

/** Resolves once `node` has answered `kind` since its stats were reset (bounded). */
async function redirectedOnce(node: Redis, kind: 'ASK' | 'TRYAGAIN'): Promise<void> {
  await until(async () => (await errorCount(node, kind)) > 0, HOLD_UNTIL_REDIRECTED_MS, `a ${kind} from the old owner`);
}

describe('a pool’s slot moved to another master under traffic (resharding)', () => {
  let cluster: TestRedisCluster;
  let sim: Simulator;
  let pool: string;
  /** Another pool on the same master, not moved: commands for both meet on one connection. */
  let staying: string;
  let source: number;
  let a: RunningGateway;
  let b: RunningGateway;
  const keyPrefix = `test-reshard-${randomUUID().slice(0, 8)}:`;

  before(async () => {
    // Each kept as it comes: one that fails must not leave the other running unseen by after().
    await Promise.all([
      startTestRedisCluster({ masters: 3 }).then((started) => (cluster = started)),
      simulator(DEPLOYMENTS.map((name) => ({ name, completionTokens: 5 }))).then((started) => (sim = started)),
    ]);
    const found = [...(await poolsOnEveryMaster(cluster, 'moving', 2))];
    [pool, source] = found[0]!;
    staying = found.find(([name, master]) => master === source && name !== pool)![0];
    const deployments = DEPLOYMENTS.map((id) => ({ id, endpoint: sim.url, tpm: 1_000_000, rpm: 100_000 }));
    const config = testConfig({
      pools: { [pool]: { deployments }, [staying]: { deployments } },
      // The store is what this tests; the lane's keys sit in a slot of their own, not the one moved.
      background: { workers: false },
    });
    [a, b] = await twoGatewaysOn(cluster, config, keyPrefix);
  });
  after(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await sim?.close();
    await cluster?.stop();
  });

  test(
    'TRYAGAIN, ASK and MOVED are followed: every request answered 200, no instance fell back, the keys moved',
    { timeout: 60_000 },
    async () => {
      const masters = (await cluster.masters()).map(({ port }) => port);
      const target = masters.find((port) => port !== source)!;
      const [from, to] = [cluster.node(source), cluster.node(target)];
      const slot = await keySlot(from, new KeyLayout(keyPrefix).poolTag(pool));
      const [fromId, toId] = await Promise.all([nodeId(from), nodeId(to)]);
      for (const chatted of await Promise.all([chat(a.url, pool), chat(b.url, pool)])) assert.equal(chatted.status, 200);
      const keysBefore = await nodeKeys(from, `${keyPrefix}{pool:${pool}}*`);
      assert.ok(keysBefore.length > 0, `the pool's keys on its master before the move (${keysBefore.length})`);
      await Promise.all(masters.map((port) => cluster.node(port).call('CONFIG', 'RESETSTAT')));

      // Traffic on both pools through both instances until a second after the move.
      const traffic = chatTraffic(CLIENTS, (client, i) => ({ url: (client % 2 === 0 ? a : b).url, pool: i % 2 === 0 ? pool : staying }));
      const outcomes: TrafficOutcome[] = [];
      let moved = 0;
      try {
        await sleep(BEFORE_MOVE_MS);
        // The order redis-cli --cluster reshard uses: the new owner imports before the old one migrates.
        await to.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', fromId);
        await from.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', toId);
        for (let round = 0; round < 200; round++) {
          const keys = (await from.call('CLUSTER', 'GETKEYSINSLOT', slot, KEYS_PER_MIGRATE)) as string[];
          if (keys.length === 0) break;
          await from.call('MIGRATE', '127.0.0.1', target, '', 0, 5000, 'KEYS', ...keys);
          moved += keys.length;
          await sleep(PAUSE_BETWEEN_MIGRATES_MS);
          const split = ((await from.call('CLUSTER', 'COUNTKEYSINSLOT', slot)) as number) > 0;
          if (round === 0 && split) await redirectedOnce(from, 'TRYAGAIN');
        }
        // Every key gone, the slot still the old owner's: a script there is sent on with ASK.
        await redirectedOnce(from, 'ASK');
        // The new owner first, so that a client sent on by the old one is never sent back.
        for (const port of [target, source, ...masters.filter((p) => p !== source && p !== target)])
          await cluster.node(port).call('CLUSTER', 'SETSLOT', slot, 'NODE', toId);
        await sleep(AFTER_MOVE_MS);
      } finally {
        outcomes.push(...(await traffic.stop()));
      }

      const seen = { ask: 0, moved: 0, tryagain: 0, asking: 0 };
      for (const port of masters)
        for (const [kind, n] of Object.entries(await redirections(cluster.node(port)))) seen[kind as keyof typeof seen] += n;
      const failed = outcomes.filter((o) => o.status !== 200);
      process.stdout.write(
        `# resharding: ${moved} keys moved; ${outcomes.length} requests, ${failed.length} not 200, slowest ` +
          `${Math.round(Math.max(...outcomes.map((o) => o.ms)))} ms; redirections ${JSON.stringify(seen)}\n`,
      );
      assert.deepEqual(failed, [], 'every request answered 200 through the move');
      const onMoving = outcomes.filter((o) => o.pool === pool).length;
      assert.ok(onMoving > 20, `traffic ran on the moving pool during the move (${onMoving} requests)`);
      // The move was met, not slept through: the cluster sent redirections, and ioredis followed ASK with ASKING.
      assert.ok(seen.tryagain + seen.ask > 0, 'scripts met the slot half moved (TRYAGAIN or ASK)');
      assert.ok(seen.asking > 0, 'an ASK was followed to the new owner');
      assert.ok(seen.moved > 0, 'a stale slot map was corrected by a MOVED');
      // Followed, not fallen back from: neither instance counted a store error.
      assert.deepEqual(
        await Promise.all([a, b].map((g) => metricValue(g.url, 'spillway_store_errors_total'))),
        [0, 0],
        'spillway_store_errors_total',
      );

      // After: every key on the new owner, none left behind, and the shared state in use there.
      assert.equal(await slotOwner(from, slot), target);
      assert.deepEqual(await nodeKeys(from, `${keyPrefix}{pool:${pool}}*`), [], 'no key left on the old owner');
      const keysAfter = await nodeKeys(to, `${keyPrefix}{pool:${pool}}*`);
      assert.ok(keysAfter.length >= keysBefore.length, `the pool's keys on the new owner (${keysAfter.length})`);
      assert.ok((await nodeKeys(from, `${keyPrefix}{pool:${staying}}*`)).length > 0, 'the other pool stayed where it was');
      for (const chatted of await Promise.all([chat(a.url, pool), chat(b.url, staying)])) assert.equal(chatted.status, 200);
    },
  );
});
