import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { Simulator } from '../../shared/simulator/index.ts';
import { createStore } from '../../shared/store/index.ts';
import { createGateway, type Gateway } from '../../gateway/app.ts';
import { createLogger } from '../../gateway/logger.ts';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.ts';
import { CLIENT_KEY, testConfig } from '../helpers/gateway.ts';
import { memoryLogger } from '../helpers/collaborators.ts';
import { chat, simulator, sleep, until } from '../helpers/fixtures.ts';

describe('when Redis goes away', () => {
  let sim: Simulator;
  let redis: RedisServer;
  let gateway: Gateway;
  let url: string;
  const store = () => createStore({ redisUrl: redis.url });
  let storeInstance: ReturnType<typeof store>;
  before(async () => {
    sim = await simulator(['d1', 'd2']);
    redis = await startRedisServer();
    storeInstance = store();
    gateway = createGateway({
      config: testConfig({
        pools: {
          p: {
            deployments: [
              { id: 'd1', endpoint: sim.url },
              { id: 'd2', endpoint: sim.url },
            ],
          },
        },
      }),
      store: storeInstance,
      logger: createLogger('error', true),
    });
    url = (await gateway.listen(0)).url;
  });
  after(async () => {
    await gateway.close();
    await storeInstance.close();
    await redis.stop();
    await sim.close();
  });

  test('requests are still served on the instance’s own view, and readiness says the store is down', async () => {
    assert.equal((await chat(url, 'p')).status, 200);
    assert.equal((await fetch(`${url}/readyz`)).status, 200);
    await redis.stop();
    const started = Date.now();
    const responses = await Promise.all(Array.from({ length: 4 }, () => chat(url, 'p')));
    assert.deepEqual(
      responses.map((r) => r.status),
      [200, 200, 200, 200],
    );
    // A stopped Redis closes its connections, so the store circuit opens before any command waits:
    // far below the 1 s command timeout. The 5 ms per-request target is in store-outage.test.ts.
    assert.ok(Date.now() - started < 1000, 'no request waits on the dead store');
    await until(async () => (await fetch(`${url}/readyz`)).status === 503, 3000, 'readyz to report the store');
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, /spillway_store_errors_total [1-9]/);
  });
});

describe('waiting while Redis is away', () => {
  let sim: Simulator;
  let redis: RedisServer;
  let gateway: Gateway;
  let storeInstance: ReturnType<typeof createStore>;
  let url: string;
  const { logger, lines } = memoryLogger();
  before(async () => {
    sim = await simulator([{ name: 'w', tpm: 1000, rpm: 600, completionTokens: 100 }], { windowMs: 6000 });
    redis = await startRedisServer();
    storeInstance = createStore({ redisUrl: redis.url });
    const pool = { maxWaitMs: 5000, deployments: [{ id: 'w', endpoint: sim.url, tpm: 1000, rpm: 600 }] };
    gateway = createGateway({ config: testConfig({ pools: { p: pool }, gateway: { windowMs: 6000 } }), store: storeInstance, logger });
    url = (await gateway.listen(0)).url;
  });
  after(async () => {
    await gateway.close();
    await storeInstance.close();
    await redis.stop();
    await sim.close();
  });

  test('a waiter whose client hangs up is taken out of the queue it waits in: the instance’s own, not Redis’s', async () => {
    await redis.stop();
    // Three reservations of 9 + 300 tokens fill the 1000-token deployment (in the instance's own store).
    for (let i = 0; i < 3; i++) {
      const filler = await chat(url, 'p', { body: { max_tokens: 300 } });
      assert.equal(filler.status, 200);
      await filler.arrayBuffer();
    }
    // node:http rather than fetch: after an abort fetch opens a spare connection that would hold the
    // gateway's close for its 5 s grace.
    const body = JSON.stringify({ messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 300 });
    const waiter = request(`${url}/openai/deployments/p/chat/completions?api-version=2024-10-21`, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', 'api-key': CLIENT_KEY },
    });
    waiter.on('error', () => {}); // the abort below
    waiter.end(body);
    await sleep(300);
    waiter.destroy();
    await until(
      () => lines.some((line) => line.message === 'request' && line.outcome === 'client-closed'),
      5000,
      'the waiter to be logged as gone',
    );
    // Its ticket left the queue it was in: it no longer heads that queue, so a request that fits is served.
    assert.deepEqual(
      lines.filter((line) => line.message === 'could not leave the wait queue'),
      [],
    );
    const served = await chat(url, 'p', { body: { max_tokens: 1 } });
    assert.equal(served.status, 200);
    await served.arrayBuffer();
  });
});
