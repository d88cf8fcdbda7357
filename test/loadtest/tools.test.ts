/**
 * The measuring instruments of loadtest/: the scenarios k6 and the local driver share, the load
 * generator every published figure comes from, and the bare Node proxy the benchmark compares with.
 * Against the in-process simulator only (no nginx: CI does not install it).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import type { Simulator } from '../../shared/simulator/index.ts';
import { ProcessSet } from '../../shared/processes/process-set.ts';
import { listScenarios, loadScenario } from '../../loadtest/lib/scenario.ts';
import { makeWorkDir, REPO_ROOT, startGateway, startGenerator, type Generator } from '../../loadtest/lib/stack.ts';
import { UPSTREAM_KEY } from '../helpers/gateway.ts';
import { simulator, until } from '../helpers/fixtures.ts';
import { startRedisServer } from '../helpers/redis-server.ts';

const K6_DIR = join(REPO_ROOT, 'loadtest', 'k6');
/** Each block runs in a few seconds; a hang fails it instead of holding the whole test run. */
const BLOCK_TIMEOUT_MS = 30_000;

describe('load test scenarios', { timeout: BLOCK_TIMEOUT_MS }, () => {
  test('every scenario validates, and k6 runs exactly the files the driver runs', () => {
    const scenarios = listScenarios();
    assert.ok(scenarios.length >= 4);
    for (const name of scenarios) assert.doesNotThrow(() => loadScenario(name), name);
    const opened = readdirSync(K6_DIR)
      .filter((file) => file.endsWith('.js'))
      .flatMap((file) =>
        [...readFileSync(join(K6_DIR, file), 'utf8').matchAll(/open\('\.\.\/scenarios\/([\w-]+)\.json'\)/g)].map((m) => m[1]),
      );
    assert.deepEqual([...new Set(opened)].sort(), [...scenarios].sort());
  });
});

describe('load generator and bare proxy', { timeout: BLOCK_TIMEOUT_MS }, () => {
  let sim: Simulator;
  let generator: Generator;
  const processes = new ProcessSet();
  before(async () => {
    sim = await simulator([{ name: 'd', completionTokens: 4 }], { latency: { ttftMs: 0, perTokenMs: 0 } });
    generator = await startGenerator(processes);
  });
  after(async () => {
    await processes.stopAll(2000);
    await sim.close();
  });

  const spec = (baseUrl: string, stream: boolean) => ({
    baseUrl,
    apiKey: UPSTREAM_KEY,
    requests: [
      {
        name: stream ? 'stream' : 'chat',
        path: '/openai/deployments/d/chat/completions?api-version=2024-10-21',
        body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 4, ...(stream ? { stream: true } : {}) }),
        stream,
        weight: 1,
      },
    ],
    maxRequests: 10_000,
    requestTimeoutMs: 5000,
    drainMs: 2000,
    okStatuses: [200],
  });

  test('counts what the upstream served, in a closed loop and at a fixed rate, with TTFT for streams', async () => {
    sim.resetStats();
    const closed = await generator.run({ ...spec(sim.url, false), mode: { kind: 'closed', concurrency: 4, durationMs: 500 } });
    assert.ok(closed.completed > 0);
    assert.equal(closed.errors, 0);
    assert.equal(closed.statuses['200'], closed.completed);
    assert.equal(closed.unfinished, 0, 'every request finished within the drain');
    assert.equal(sim.stats('d').served, closed.completed, 'every completed request was served upstream, once');

    sim.resetStats();
    const open = await generator.run({
      ...spec(sim.url, true),
      mode: { kind: 'open', startRate: 40, stages: [{ durationMs: 500, target: 40 }], maxInFlight: 16 },
    });
    assert.ok(open.sent >= 15 && open.sent <= 25, `about 20 arrivals at 40/s for 0.5 s, got ${open.sent}`);
    // The schedule's arrivals are floor(area under the rate) = floor(40/s × 0.5 s) = 20: each is sent or dropped.
    assert.equal(open.sent + open.dropped, 20, 'every scheduled arrival accounted for');
    assert.equal(open.dropped, 0, 'never 16 in flight against an instant upstream');
    assert.equal(open.completed, open.sent);
    assert.equal(open.unfinished, 0, 'every request finished within the drain');
    assert.equal(open.errors, 0);
    assert.equal(open.incompleteStreams, 0);
    assert.equal(open.ttft?.count, open.completed, 'a TTFT sample per stream');
    assert.equal(sim.stats('d').served, open.completed);
  });

  /** A closed loop of requests, then one of streams, through a proxy: each completed, and was served upstream once. */
  async function passesThrough(url: string, concurrency: number): Promise<number> {
    sim.resetStats();
    let completed = 0;
    for (const stream of [false, true]) {
      const run = await generator.run({ ...spec(url, stream), mode: { kind: 'closed', concurrency, durationMs: 300 } });
      assert.ok(run.completed > 0);
      assert.equal(run.errors, 0);
      assert.equal(run.unfinished, 0);
      assert.equal(run.incompleteStreams, 0);
      // The proxied events arrive intact: every stream carried a content event.
      if (stream) assert.equal(run.ttft?.count, run.completed, 'a TTFT sample per stream');
      completed += run.completed;
    }
    assert.equal(sim.stats('d').served, completed, 'every request the runs completed was served upstream, once');
    return completed;
  }

  test('the bare Node proxy passes requests and streams through unchanged', async () => {
    const bare = await startGateway(processes, makeWorkDir(processes, 'spillway-loadtest-test-'), {
      name: 'bare-proxy-test',
      configFile: '',
      script: 'loadtest/bare-proxy.ts',
      env: { UPSTREAM: sim.url },
    });
    await passesThrough(bare.url, 2);
    const direct = await fetch(`${sim.url}/openai/deployments/d/chat/completions?api-version=2024-10-21`, {
      method: 'POST',
      headers: { 'api-key': 'wrong' },
      body: '{}',
    });
    const proxied = await fetch(`${bare.url}/openai/deployments/d/chat/completions?api-version=2024-10-21`, {
      method: 'POST',
      headers: { 'api-key': 'wrong' },
      body: '{}',
    });
    assert.equal(proxied.status, direct.status, 'upstream errors pass through as they are');
    assert.deepEqual(await proxied.json(), await direct.json());
  });

  test('the stack floor passes requests and streams through, and gives back every lease it took', async () => {
    const redis = await startRedisServer();
    const connection = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    let watch: NodeJS.Timeout | undefined;
    try {
      await connection.connect();
      // Its lease set, watched while the runs go: a lease taken and never given back would stay in it.
      const taken = new Set<string>();
      const read = () => connection.zrange('{floor}:leases', 0, -1).then((ids) => ids.forEach((id) => taken.add(id)));
      watch = setInterval(() => void read().catch(() => undefined), 20);
      const floor = await startGateway(processes, makeWorkDir(processes, 'spillway-loadtest-test-'), {
        name: 'stack-floor-test',
        configFile: '',
        script: 'loadtest/stack-floor.ts',
        env: { UPSTREAM: sim.url, REDIS_URL: redis.url },
      });
      const completed = await passesThrough(floor.url, 4);
      assert.ok(taken.size > 0, 'leases were held while requests were in flight');
      // A release leaves as its answer closes, after the client has it: the last ones may still be on their way.
      await until(async () => (await connection.zcard('{floor}:leases')) === 0, 2000, 'every lease given back');
      const notJson = await fetch(`${floor.url}/openai/deployments/d/chat/completions?api-version=2024-10-21`, {
        method: 'POST',
        body: '{',
      });
      assert.equal(notJson.status, 400);
      assert.equal(sim.stats('d').served, completed, 'a body that is not JSON never went upstream');
    } finally {
      clearInterval(watch);
      connection.disconnect();
      await redis.stop();
    }
  });
});
