import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Simulator } from '../shared/simulator/index.ts';
import { createStore } from '../shared/store/index.ts';
import { createGateway, type Gateway } from '../gateway/app.ts';
import { createLogger } from '../gateway/logger.ts';
import { startRedisServer, type RedisServer } from './helpers/redis-server.ts';
import { testConfig } from './helpers/gateway.ts';
import { chat, simulator, until } from './helpers/fixtures.ts';

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
      config: testConfig({ pools: { p: { deployments: [{ id: 'd1', endpoint: sim.url }, { id: 'd2', endpoint: sim.url }] } } }),
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
    assert.deepEqual(responses.map((r) => r.status), [200, 200, 200, 200]);
    assert.ok(Date.now() - started < 3000, 'no request waits on the dead store');
    await until(async () => (await fetch(`${url}/readyz`)).status === 503, 3000, 'readyz to report the store');
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, /spillway_store_errors_total [1-9]/);
  });
});
