/**
 * Gateway instances on a real 3-master Redis Cluster (REDIS_CLUSTER_NODES' target): requests to pools
 * whose keys sit on every master, state shared between two instances (a 429 cooldown learnt by one is
 * obeyed by the other), a client quota counted cluster-wide, and a Batch API batch run to completion by
 * the lane (BullMQ under the `{lane}` tag, the records under `{batches}`) on the cluster.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import OpenAI, { toFile } from 'openai';
import type { GatewayConfig } from '../../shared/config/schema.ts';
import type { Simulator } from '../../shared/simulator/index.ts';
import { chat, simulator, until } from '../helpers/fixtures.ts';
import { CLIENT_KEY, spawnGateway, testConfig, type RunningGateway } from '../helpers/gateway.ts';
import { nodeKeys, poolsOnEveryMaster, startTestRedisCluster, twoGatewaysOn, type TestRedisCluster } from '../helpers/redis-cluster.ts';

const QUOTA_KEY = 'quota-client-key';
const QUOTA_RPM = 3;

describe('gateways on a Redis Cluster', () => {
  let cluster: TestRedisCluster;
  let sim: Simulator;
  let pools: Map<string, number>;
  let config: GatewayConfig;
  const keyPrefix = `test-cluster-gw-${randomUUID().slice(0, 8)}:`;
  let a: RunningGateway;
  let b: RunningGateway;

  before(async () => {
    // Each kept as it comes: one that fails must not leave the other running unseen by after().
    await Promise.all([
      startTestRedisCluster({ masters: 3 }).then((started) => (cluster = started)),
      simulator([
        { name: 'first', completionTokens: 5 },
        { name: 'second', completionTokens: 5 },
      ]).then((started) => (sim = started)),
    ]);
    pools = await poolsOnEveryMaster(cluster, 'cluster-pool', 2);
    config = testConfig({
      pools: Object.fromEntries(
        [...pools.keys()].map((name) => [
          name,
          {
            deployments: [
              // The first is preferred: a test can make it answer 429 and see the second take over. The
              // budgets make every request leave its count in Redis (the usage windows).
              { id: 'first', endpoint: sim.url, priority: 1, tpm: 1_000_000 },
              { id: 'second', endpoint: sim.url, priority: 2, tpm: 1_000_000 },
            ],
          },
        ]),
      ),
      // A quota window long enough that the test's few requests all fall in one.
      gateway: { windowMs: 6000 },
      clients: [
        { name: 'tests', apiKey: CLIENT_KEY },
        { name: 'quota', apiKey: QUOTA_KEY, rpm: QUOTA_RPM },
      ],
    });
    [a, b] = await twoGatewaysOn(cluster, config, keyPrefix);
  });
  after(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await sim?.close();
    await cluster?.stop();
  });

  test('requests to pools on every master succeed through both instances; each pool’s keys sit on its master', async () => {
    const responses = await Promise.all([...pools.keys()].flatMap((pool) => [a, b].map(async (g) => (await chat(g.url, pool)).status)));
    assert.deepEqual(responses, Array(pools.size * 2).fill(200));
    for (const [pool, master] of pools) {
      const keys = await nodeKeys(cluster.node(master), `${keyPrefix}{pool:${pool}}*`);
      assert.ok(keys.length > 0, `${pool}: its keys are on its master (${master})`);
      for (const other of await cluster.masters())
        if (other.port !== master)
          assert.deepEqual(await nodeKeys(cluster.node(other.port), `${keyPrefix}{pool:${pool}}*`), [], `${pool}: none elsewhere`);
    }
    assert.equal(new Set(pools.values()).size, 3, 'the pools span all three masters');
  });

  test('a gateway process given REDIS_CLUSTER_NODES says so and shares the cluster with the others', async () => {
    // REDIS_URL emptied: the test run's single Redis would otherwise be set too (an error).
    const child = await spawnGateway(config, { REDIS_URL: '', REDIS_CLUSTER_NODES: cluster.seeds });
    try {
      const listening = child.logs.find((entry) => entry.message === 'gateway listening');
      assert.equal(listening?.store, 'redis-cluster');
      assert.equal(listening?.redis, `cluster redis://${cluster.seeds}`);
      // It keeps the default key prefix (the in-process instances have their own): its pool state sits under `spillway:`.
      const pool = [...pools.keys()][2]!;
      assert.equal((await chat(child.url, pool)).status, 200);
      const [master] = [...pools].filter(([name]) => name === pool).map(([, port]) => port);
      assert.ok(
        (await nodeKeys(cluster.node(master!), `spillway:{pool:${pool}}*`)).length > 0,
        'its state is in the cluster, on the pool’s master',
      );
    } finally {
      await child.stop();
    }
  });

  test('a client quota counts requests through both instances together', async () => {
    const pool = [...pools.keys()][0]!;
    const statuses: number[] = [];
    for (let i = 0; i < QUOTA_RPM + 1; i++) statuses.push((await chat((i % 2 === 0 ? a : b).url, pool, { key: QUOTA_KEY })).status);
    assert.deepEqual(statuses, [...Array(QUOTA_RPM).fill(200), 429], 'the quota is the client’s, cluster-wide');
  });

  test('a Batch API batch runs to completion through the lane on the cluster', async () => {
    const pool = [...pools.keys()][1]!;
    const openai = new OpenAI({ baseURL: `${a.url}/openai/v1`, apiKey: CLIENT_KEY, maxRetries: 0, timeout: 10_000 });
    const lines = Array.from({ length: 6 }, (_, i) =>
      JSON.stringify({
        custom_id: `line-${i}`,
        method: 'POST',
        url: '/v1/chat/completions',
        body: { model: pool, messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 5 },
      }),
    );
    const file = await openai.files.create({ file: await toFile(Buffer.from(lines.join('\n')), 'lines.jsonl'), purpose: 'batch' });
    const created = await openai.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    // Read through the other instance: the records are shared through the cluster too.
    const other = new OpenAI({ baseURL: `${b.url}/openai/v1`, apiKey: CLIENT_KEY, maxRetries: 0, timeout: 10_000 });
    let batch = created;
    await until(
      async () => {
        batch = await other.batches.retrieve(created.id);
        return ['completed', 'failed', 'expired', 'cancelled'].includes(batch.status);
      },
      15_000,
      'the batch done',
    );
    assert.equal(batch.status, 'completed');
    assert.deepEqual(batch.request_counts, { total: 6, completed: 6, failed: 0 });
    const output = (await (await other.files.content(batch.output_file_id!)).text()).split('\n').filter(Boolean);
    const ids = output.map((line) => (JSON.parse(line) as { custom_id: string; response: { status_code: number } }).custom_id).sort();
    assert.deepEqual(ids, lines.map((_, i) => `line-${i}`).sort());
    for (const line of output) assert.equal((JSON.parse(line) as { response: { status_code: number } }).response.status_code, 200);
  });

  // Last: the prober's first run comes at start (BullMQ's scheduler runs at once) and would end a cooldown set then.
  test('a 429 cooldown learnt by one instance is obeyed by the other, on every master', async () => {
    for (const pool of pools.keys()) {
      sim.setFault('first', { fault: { kind: 'status', status: 429, retryAfterMs: 30_000 }, count: 1 });
      const throttled = await chat(a.url, pool);
      assert.equal(throttled.status, 200, `${pool}: the 429 is failed over`);
      assert.equal(throttled.headers.get('x-gateway-deployment'), 'second');
      const [first] = await b.store.snapshot({
        name: pool,
        strategy: 'least-requests',
        deployments: [{ id: 'first', priority: 1, weight: 1 }],
      });
      assert.ok((first?.cooldownUntil ?? 0) > Date.now() + 20_000, `${pool}: the other instance sees the cooldown`);
      for (let i = 0; i < 3; i++) {
        const response = await chat(b.url, pool);
        assert.equal(response.status, 200);
        assert.equal(
          response.headers.get('x-gateway-deployment'),
          'second',
          `${pool}: the other instance keeps off the cooled-down deployment`,
        );
      }
    }
    sim.setFault('first', null);
  });
});
