/**
 * A Redis outage costs clients nothing: with a private redis-server killed, frozen (SIGSTOP) and
 * brought back, requests keep being served on the instance's own view at once, the health the
 * instance learns meanwhile (cooldowns, renewed leases) lives there, and what it learnt reaches Redis
 * again when Redis answers. What the clients saw and what the simulator received are asserted.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { createGateway, type Gateway } from '../../gateway/app.ts';
import { createLogger } from '../../gateway/logger.ts';
import { admissionWindowMs } from '../../gateway/routing/window.ts';
import type { GatewayConfig } from '../../shared/config/schema.ts';
import type { Simulator } from '../../shared/simulator/index.ts';
import { RedisStore } from '../../shared/store/redis-store.ts';
import { chat, simulator, sleep, until } from '../helpers/fixtures.ts';
import { testConfig } from '../helpers/gateway.ts';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.ts';

const ADMIN_KEY = 'admin-test-key-outage';

interface Instance {
  url: string;
  store: RedisStore;
  gateway: Gateway;
  close(): Promise<void>;
}

async function instance(config: GatewayConfig, redisUrl: string): Promise<Instance> {
  const store = new RedisStore(redisUrl, { windowMs: admissionWindowMs(config.gateway.windowMs) });
  const gateway = createGateway({ config, store, logger: createLogger('error', true), adminApiKey: ADMIN_KEY });
  const { url } = await gateway.listen(0);
  return {
    url,
    store,
    gateway,
    async close() {
      await gateway.close();
      await store.close();
    },
  };
}

/** Sequential requests, each read whole; their latencies in ms. */
async function timedRequests(url: string, count: number): Promise<number[]> {
  const latencies: number[] = [];
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    const response = await chat(url, 'p');
    await response.arrayBuffer();
    assert.equal(response.status, 200);
    latencies.push(performance.now() - started);
  }
  return latencies;
}

/** The instance routes on Redis again: its requests are booked in the shared windows (d1 takes them all: priority 1). */
async function bookedInRedisAgain(gw: Instance): Promise<void> {
  const layout = { name: 'p', strategy: 'least-requests' as const, deployments: [{ id: 'd1', priority: 1, weight: 1, tpm: 1_000_000 }] };
  const before = (await gw.store.snapshot(layout))[0]?.tokensInWindow ?? 0;
  await until(
    async () => {
      await (await chat(gw.url, 'p')).arrayBuffer();
      return ((await gw.store.snapshot(layout))[0]?.tokensInWindow ?? 0) > before;
    },
    5000,
    'requests to be booked in Redis again',
  );
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

async function inFlightOf(url: string): Promise<number> {
  const response = await fetch(`${url}/admin/pools`, { headers: { 'api-key': ADMIN_KEY } });
  const body = (await response.json()) as { pools: Record<string, { deployments: { inFlight: number }[] }> };
  return body.pools.p!.deployments.reduce((sum, d) => sum + d.inFlight, 0);
}

describe('a Redis outage', () => {
  let sim: Simulator;
  let redis: RedisServer;
  const open: Instance[] = [];
  /** Budgets (`tpm`) let the gateway learn from the deployments' rate-limit headers; without, only cooldowns keep d1 out. */
  const config = (gateway: Record<string, unknown> = {}, endpoint = sim.url, tpm: number | null = 1_000_000) =>
    testConfig({
      pools: {
        p: {
          deployments: [
            { id: 'd1', endpoint, priority: 1, tpm: tpm ?? undefined },
            { id: 'd2', endpoint, priority: 2, tpm: tpm ?? undefined },
          ],
        },
      },
      gateway,
    });

  before(async () => {
    sim = await simulator(['d1', 'd2'].map((name) => ({ name, tpm: 10_000_000 })));
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((i) => i.close()));
    if (redis.process.signalCode === null && redis.process.exitCode === null) redis.process.kill('SIGCONT');
    await redis.stop();
    sim.reset();
  });
  after(() => sim.close());

  const start = async (gateway: Record<string, unknown> = {}, endpoint?: string, tpm?: number | null) => {
    const running = await instance(config(gateway, endpoint, tpm), redis.url);
    open.push(running);
    return running;
  };

  test('Redis killed: requests go to the own view at once (under 5 ms added), readiness says so, Redis back → shared again', async (t) => {
    redis = await startRedisServer();
    const gw = await start();
    await timedRequests(gw.url, 5); // warm: connections, tokenizer, scripts
    const before = median(await timedRequests(gw.url, 25));
    redis.process.kill('SIGKILL');
    await until(() => redis.process.exitCode !== null || redis.process.signalCode !== null, 3000, 'redis-server to die');
    const firstStarted = performance.now();
    assert.equal((await chat(gw.url, 'p')).status, 200);
    const first = performance.now() - firstStarted;
    const during = median(await timedRequests(gw.url, 25));
    t.diagnostic(`killed: median ${before.toFixed(1)} ms before, ${during.toFixed(1)} ms during; detecting request ${first.toFixed(0)} ms`);
    assert.ok(during < before + 5, `added latency during the outage: median ${during.toFixed(1)} ms vs ${before.toFixed(1)} ms before`);
    assert.ok(first < 1500, `the detecting request took ${first.toFixed(0)} ms`);
    assert.equal((await fetch(`${gw.url}/readyz`)).status, 503);

    // Back on the same port: the instance finds it by itself and routes on the shared state again.
    const port = redis.port;
    redis = await startRedisServer(undefined, port);
    await until(async () => (await fetch(`${gw.url}/readyz`)).status === 200, 5000, 'readyz to see Redis back');
    await bookedInRedisAgain(gw);
  });

  test('Redis frozen (SIGSTOP): only the requests in flight at the freeze wait; then the own view, and SIGCONT brings the shared state back', async (t) => {
    redis = await startRedisServer();
    const gw = await start();
    await timedRequests(gw.url, 5);
    const before = median(await timedRequests(gw.url, 15));
    redis.process.kill('SIGSTOP');
    const detecting = performance.now();
    assert.equal((await chat(gw.url, 'p')).status, 200);
    const detection = performance.now() - detecting;
    const during = median(await timedRequests(gw.url, 25));
    assert.ok(detection < 2500, `the request that found Redis frozen took ${detection.toFixed(0)} ms (command timeout 1 s)`);
    t.diagnostic(
      `frozen: median ${before.toFixed(1)} ms before, ${during.toFixed(1)} ms during; detecting request ${detection.toFixed(0)} ms`,
    );
    assert.ok(during < before + 5, `added latency while frozen: median ${during.toFixed(1)} ms vs ${before.toFixed(1)} ms before`);
    redis.process.kill('SIGCONT');
    await until(async () => (await fetch(`${gw.url}/readyz`)).status === 200, 5000, 'readyz after SIGCONT');
    await bookedInRedisAgain(gw);
    const after = median(await timedRequests(gw.url, 10));
    assert.ok(after < before + 20, `after SIGCONT: median ${after.toFixed(1)} ms`);
  });

  test('a 429 storm while Redis is down is tried once per cooldown, not once per request', async () => {
    redis = await startRedisServer();
    const gw = await start({}, undefined, null);
    await timedRequests(gw.url, 2);
    await redis.stop();
    sim.setFault('d1', { fault: { kind: 'storm-429', retryAfterMs: 30_000 } });
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) {
      const response = await chat(gw.url, 'p');
      await response.arrayBuffer();
      statuses.push(response.status);
    }
    assert.deepEqual(new Set(statuses), new Set([200]), 'd2 served every request: clients saw no 429');
    assert.equal(sim.stats('d1').throttled, 1, 'd1 was asked once, then left alone for its retry-after');
  });

  test('what the instance learnt during the outage is published when Redis returns: another instance avoids the throttled deployment', async () => {
    redis = await startRedisServer();
    const a = await start({}, undefined, null);
    const b = await start({}, undefined, null);
    await timedRequests(a.url, 2);
    await timedRequests(b.url, 2);
    const port = redis.port;
    await redis.stop();
    sim.setFault('d1', { fault: { kind: 'storm-429', retryAfterMs: 30_000 } });
    assert.equal((await chat(a.url, 'p')).status, 200, 'A fails over to d2 and cools d1 down in its own view');
    assert.equal(sim.stats('d1').throttled, 1);
    // Redis comes back empty (no persistence): only A's replay can tell the cluster about d1.
    redis = await startRedisServer(undefined, port);
    await until(async () => (await fetch(`${a.url}/readyz`)).status === 200, 5000, 'A to see Redis back');
    await until(async () => (await fetch(`${b.url}/readyz`)).status === 200, 5000, 'B to see Redis back');
    await sleep(600); // both instances' store circuits close within a few probe intervals
    for (let i = 0; i < 10; i++) assert.equal((await chat(b.url, 'p')).status, 200);
    assert.equal(sim.stats('d1').throttled, 1, 'B never sent to d1: the cooldown A learnt reached Redis');
  });

  test('leases granted while Redis is away are renewed in the own view: long streams keep counting as in flight', async () => {
    const slow = await simulator(['d1', 'd2'].map((name) => ({ name, tpm: 10_000_000, latency: { ttftMs: 0, perTokenMs: 250 } })));
    try {
      redis = await startRedisServer();
      const gw = await start({ leaseMs: 1000 }, slow.url);
      await (await chat(gw.url, 'p', { body: { max_tokens: 1 } })).arrayBuffer();
      await redis.stop();
      const responses = await Promise.all([0, 1].map(() => chat(gw.url, 'p', { stream: true, body: { max_tokens: 10 } })));
      await sleep(1800); // past leaseMs: unrenewed leases would have been reaped by now
      assert.equal(await inFlightOf(gw.url), 2, 'both streams still hold their lease in the instance’s own view');
      await Promise.all(responses.map((r) => r.text()));
      await until(async () => (await inFlightOf(gw.url)) === 0, 3000, 'the leases to be released');
    } finally {
      await slow.close();
    }
  });
});
