import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import type { Simulator } from '../../shared/simulator/index.ts';
import { startGateway, testConfig, type RunningGateway } from '../helpers/gateway.ts';
import { chat, simulator, sleep, uniquePool, until } from '../helpers/fixtures.ts';

const IDS = ['d1', 'd2', 'd3'];

describe('failover, shared health and saturation', () => {
  let sim: Simulator;
  const running: RunningGateway[] = [];
  before(async () => {
    sim = await simulator(IDS);
  });
  afterEach(() => sim.reset());
  after(async () => {
    await Promise.all(running.map((g) => g.close()));
    await sim.close();
  });

  /** With `tiered`, d3 is a second tier: taken only when d1 and d2 cannot, so the order of attempts is known. */
  async function gateways(
    pool: string,
    count: number,
    settings: Record<string, unknown> = {},
    strategy = 'round-robin',
    tiered = false,
  ): Promise<RunningGateway[]> {
    const deployments = IDS.map((id) => ({ id, endpoint: sim.url, priority: tiered && id === 'd3' ? 2 : 1 }));
    const config = testConfig({ pools: { [pool]: { strategy, deployments } }, gateway: settings });
    const started = await Promise.all(Array.from({ length: count }, () => startGateway(config)));
    running.push(...started);
    return started;
  }
  const received = () => Object.fromEntries(IDS.map((id) => [id, sim.stats(id).received]));

  for (const [name, fault] of [
    ['a 500', { kind: 'status', status: 500 }],
    ['a 503', { kind: 'status', status: 503 }],
    ['a 408', { kind: 'status', status: 408 }],
    ['a connection reset', { kind: 'reset' }],
  ] as const) {
    test(`fails over on ${name} before any byte reached the client`, async () => {
      const pool = uniquePool();
      const [g] = await gateways(pool, 1, {}, 'least-requests', true);
      sim.setFault('d1', { fault });
      sim.setFault('d2', { fault });
      const response = await chat(g!.url, pool);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-gateway-deployment'), 'd3');
      assert.equal(response.headers.get('x-gateway-attempts'), '3');
      const body = (await response.json()) as { object: string };
      assert.equal(body.object, 'chat.completion', 'the client sees only the good answer');
      assert.deepEqual(received(), { d1: 1, d2: 1, d3: 1 });
    });
  }

  test('fails over when a deployment hangs, and closes the hung connection', async () => {
    const pool = uniquePool();
    const [g] = await gateways(pool, 1, { upstreamTimeoutMs: 300 }, 'least-requests', true);
    sim.setFault('d1', { fault: { kind: 'hang' } });
    sim.setFault('d2', { fault: { kind: 'hang' } });
    const started = Date.now();
    const response = await chat(g!.url, pool);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-gateway-deployment'), 'd3');
    assert.ok(Date.now() - started >= 600, 'two timeouts of 300 ms passed');
    await until(
      () => sim.stats('d1').aborted === 1 && sim.stats('d2').aborted === 1,
      2000,
      'the simulator to see the hung requests closed',
    );
  });

  test('a 429 cools the deployment down for every instance until its retry-after', async () => {
    const pool = uniquePool();
    const [a, b] = await gateways(pool, 2, {}, 'least-requests', true);
    sim.setFault('d1', { fault: { kind: 'storm-429', retryAfterMs: 2000 }, count: 1 });
    sim.setFault('d2', { fault: { kind: 'storm-429', retryAfterMs: 2000 }, count: 1 });
    const first = await chat(a!.url, pool);
    assert.equal(first.status, 200);
    assert.equal(first.headers.get('x-gateway-deployment'), 'd3');
    assert.equal(sim.stats('d1').throttled + sim.stats('d2').throttled, 2);
    sim.resetStats();
    // Instance b never saw a 429, yet sends nothing to the cooled deployments.
    const results = await Promise.all(Array.from({ length: 6 }, () => chat(b!.url, pool)));
    assert.deepEqual(
      results.map((r) => r.status),
      [200, 200, 200, 200, 200, 200],
    );
    assert.deepEqual(received(), { d1: 0, d2: 0, d3: 6 });
    const snapshot = await b!.store.snapshot({
      name: pool,
      strategy: 'least-requests',
      deployments: IDS.map((id) => ({ id, priority: 1, weight: 1 })),
    });
    const cooled = snapshot.find((d) => d.id === 'd1')!;
    assert.ok(cooled.cooldownUntil - Date.now() > 1000 && cooled.cooldownUntil - Date.now() <= 2100, 'cooldown as long as retry-after-ms');
  });

  test('when every deployment is throttled the client gets 429 with the soonest retry time', async () => {
    const pool = uniquePool();
    const [g] = await gateways(pool, 1, { maxAttempts: 5 }, 'least-requests');
    sim.setFault('d1', { fault: { kind: 'storm-429', retryAfterMs: 3000 } });
    sim.setFault('d2', { fault: { kind: 'storm-429', retryAfterMs: 1500 } });
    sim.setFault('d3', { fault: { kind: 'storm-429', retryAfterMs: 5000 } });
    const response = await chat(g!.url, pool);
    assert.equal(response.status, 429);
    assert.equal(response.headers.get('x-gateway-attempts'), '3');
    const retryAfterMs = Number(response.headers.get('retry-after-ms'));
    assert.ok(retryAfterMs > 1000 && retryAfterMs <= 1500, `retry-after-ms ${retryAfterMs} is d2's`);
    assert.equal(response.headers.get('retry-after'), '2');
    const body = (await response.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, '429');
    assert.match(body.error.message, /retry after 2 seconds/);
    // Honest saturation costs no upstream call: the next request is answered from the shared cooldowns.
    sim.resetStats();
    const again = await chat(g!.url, pool);
    assert.equal(again.status, 429);
    assert.equal(again.headers.get('x-gateway-attempts'), null);
    assert.deepEqual(received(), { d1: 0, d2: 0, d3: 0 });
    // Honoured, the retry time works.
    sim.setFault('d2', null);
    await sleep(Number(again.headers.get('retry-after-ms')) + 20);
    const honoured = await chat(g!.url, pool);
    assert.equal(honoured.status, 200);
    assert.equal(honoured.headers.get('x-gateway-deployment'), 'd2');
  });

  test('after the allowed attempts the last upstream error is returned as Azure sent it', async () => {
    const pool = uniquePool();
    const [g] = await gateways(pool, 1, { maxAttempts: 2 }, 'least-requests');
    for (const id of IDS) sim.setFault(id, { fault: { kind: 'status', status: 500 } });
    const response = await chat(g!.url, pool);
    assert.equal(response.status, 500);
    assert.equal(response.headers.get('x-gateway-attempts'), '2');
    const body = (await response.json()) as { error: { type: string; message: string } };
    assert.equal(body.error.type, 'server_error');
    assert.equal(
      IDS.reduce((sum, id) => sum + sim.stats(id).received, 0),
      2,
    );
  });

  test('connection failures on every deployment end in a 502 without internals', async () => {
    const pool = uniquePool();
    const [g] = await gateways(pool, 1, {}, 'least-requests');
    for (const id of IDS) sim.setFault(id, { fault: { kind: 'reset' } });
    const response = await chat(g!.url, pool);
    assert.equal(response.status, 502);
    const text = await response.text();
    assert.equal(JSON.parse(text).error.code, 'BadGateway');
    assert.ok(!text.includes('127.0.0.1') && !text.includes('ECONNRESET'));
  });

  test('a circuit opened by one instance is honoured by another, and one probe closes it', async () => {
    const pool = uniquePool();
    const breaker = { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeoutMs: 800, rollingCountTimeoutMs: 10_000 };
    const [a, b] = await gateways(pool, 2, { breaker }, 'round-robin');
    sim.setFault('d1', { fault: { kind: 'status', status: 503 } });
    for (let i = 0; i < 6; i++) assert.equal((await chat(a!.url, pool)).status, 200, 'a fails over while d1 fails');
    const layout = { name: pool, strategy: 'round-robin' as const, deployments: IDS.map((id) => ({ id, priority: 1, weight: 1 })) };
    await until(
      async () => (await a!.store.snapshot(layout)).find((d) => d.id === 'd1')?.circuit === 'open',
      2000,
      'the circuit to be published',
    );
    sim.resetStats();
    for (let i = 0; i < 6; i++) assert.equal((await chat(b!.url, pool)).status, 200);
    assert.equal(sim.stats('d1').received, 0, 'b sends nothing to the open circuit');
    // After the reset timeout exactly one probe goes through (held 300 ms upstream while five more
    // requests arrive on both instances); it succeeds and the circuit closes everywhere.
    sim.setFault('d1', { fault: { kind: 'slow-first-byte', delayMs: 300 } });
    await sleep(900);
    const probes = await Promise.all(Array.from({ length: 6 }, (_, i) => chat((i % 2 ? a : b)!.url, pool)));
    assert.ok(probes.every((r) => r.status === 200));
    assert.equal(sim.stats('d1').received, 1, 'one probe cluster-wide');
    sim.setFault('d1', null);
    await until(
      async () => (await b!.store.snapshot(layout)).find((d) => d.id === 'd1')?.circuit === 'closed',
      2000,
      'the circuit to close',
    );
    sim.resetStats();
    for (let i = 0; i < 6; i++) await chat(b!.url, pool);
    assert.equal(sim.stats('d1').received, 2, 'd1 is back in the rotation');
  });

  test('an upstream 404 DeploymentNotFound fails over and cools the misnamed deployment down for a minute', async () => {
    const pool = uniquePool();
    // The first tier names a deployment the resource does not have (a config mistake); d1 is valid.
    const deployments = [
      { id: 'misnamed', endpoint: sim.url, deployment: 'no-such-deployment', priority: 1 },
      { id: 'd1', endpoint: sim.url, priority: 2 },
    ];
    const g = await startGateway(testConfig({ pools: { [pool]: { deployments } } }));
    running.push(g);
    const response = await chat(g.url, pool);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-gateway-deployment'), 'd1');
    assert.equal(response.headers.get('x-gateway-attempts'), '2');
    assert.equal(((await response.json()) as { object: string }).object, 'chat.completion', 'the 404 never reached the client');
    const layout = {
      name: pool,
      strategy: 'least-requests' as const,
      deployments: deployments.map((d) => ({ id: d.id, priority: d.priority, weight: 1 })),
    };
    const misnamed = (await g.store.snapshot(layout)).find((d) => d.id === 'misnamed')!;
    const coolingMs = misnamed.cooldownUntil - Date.now();
    assert.ok(coolingMs > 50_000 && coolingMs <= 60_000, `cooled down for about a minute (${coolingMs} ms)`);
    // Out of rotation meanwhile: the next request goes straight to d1.
    const next = await chat(g.url, pool);
    assert.equal(next.status, 200);
    assert.equal(next.headers.get('x-gateway-attempts'), '1');
    assert.equal(sim.stats('d1').received, 2);
  });

  test('a 4xx never opens a circuit', async () => {
    const pool = uniquePool();
    const breaker = { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeoutMs: 5000, rollingCountTimeoutMs: 10_000 };
    const [g] = await gateways(pool, 1, { breaker }, 'round-robin');
    for (let i = 0; i < 8; i++) assert.equal((await chat(g!.url, pool, { body: { messages: 'bad' } })).status, 400);
    const layout = { name: pool, strategy: 'round-robin' as const, deployments: IDS.map((id) => ({ id, priority: 1, weight: 1 })) };
    assert.deepEqual(
      (await g!.store.snapshot(layout)).map((d) => d.circuit),
      ['closed', 'closed', 'closed'],
    );
  });
});
