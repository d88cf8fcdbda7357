/**
 * The admin API (README: ADMIN_API_KEY guards /admin/*; absent, the admin routes answer 404): a
 * cluster-wide snapshot of every pool's deployments, and drain / enable / reset of one deployment for
 * every instance, on whole gateways in front of the simulator (two instances on one Redis), with what
 * the simulator received and what each instance logged.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { createGateway } from '../../gateway/app.ts';
import { adminUser } from '../../gateway/http/admin-routes.ts';
import { admissionWindowMs } from '../../gateway/routing/window.ts';
import type { GatewayConfig } from '../../shared/config/schema.ts';
import type { SimDeployment, Simulator } from '../../shared/simulator/index.ts';
import { RedisStore } from '../../shared/store/redis-store.ts';
import type { DeploymentSnapshot } from '../../shared/store/types.ts';
import { memoryLogger, type LogLine } from '../helpers/collaborators.ts';
import { CLIENT_KEY, startGateway, testConfig, type RunningGateway } from '../helpers/gateway.ts';
import { chat, simulator, uniquePool, until } from '../helpers/fixtures.ts';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.ts';

const ADMIN_KEY = 'admin-test-key-0123';

describe('admin API', () => {
  let sim: Simulator;
  const running: RunningGateway[] = [];
  const pool = uniquePool();
  before(async () => {
    sim = await simulator(['d1', 'd2']);
  });
  after(async () => {
    await Promise.all(running.map((g) => g.close()));
    await sim.close();
  });
  async function gateway(adminApiKey?: string): Promise<RunningGateway> {
    const config = testConfig({
      pools: { [pool]: { strategy: 'round-robin', deployments: ['d1', 'd2'].map((id) => ({ id, endpoint: sim.url })) } },
    });
    const g = await startGateway(config, { adminApiKey });
    running.push(g);
    return g;
  }
  const adminPools = (g: RunningGateway, headers: Record<string, string> = {}) =>
    fetch(`${g.url}/admin/pools`, { headers, signal: AbortSignal.timeout(10_000) });

  test('without an admin key configured, /admin/pools is 404 whatever key is presented', async () => {
    const g = await gateway();
    for (const headers of [{}, { 'api-key': ADMIN_KEY }, { 'api-key': CLIENT_KEY }] as Record<string, string>[]) {
      const response = await adminPools(g, headers);
      assert.equal(response.status, 404, JSON.stringify(headers));
      assert.equal(((await response.json()) as { error: { code: string } }).error.code, '404');
    }
  });

  test('with an admin key: 401 without it or with another key, the snapshot with it', async () => {
    const g = await gateway(ADMIN_KEY);
    for (const headers of [
      {},
      { 'api-key': 'wrong-admin-key' },
      { 'api-key': CLIENT_KEY },
      { authorization: `Bearer ${CLIENT_KEY}` },
    ] as Record<string, string>[]) {
      const response = await adminPools(g, headers);
      assert.equal(response.status, 401, JSON.stringify(headers));
      const text = await response.text();
      assert.equal((JSON.parse(text) as { error: { code: string } }).error.code, '401');
      assert.ok(!text.includes(ADMIN_KEY), 'the key is never echoed');
    }
    const served = await chat(g.url, pool);
    assert.equal(served.status, 200, 'one request, so the snapshot has something to show');
    await served.arrayBuffer();

    const response = await adminPools(g, { 'api-key': ADMIN_KEY });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
    const body = (await response.json()) as {
      pools: Record<
        string,
        { strategy: string; deployments: { id: string; requestsInWindow: number; cooldownUntil: number; circuit: string }[] }
      >;
    };
    const snapshot = body.pools[pool];
    assert.ok(snapshot, `the pool ${pool} is listed`);
    assert.equal(snapshot.strategy, 'round-robin');
    assert.deepEqual(snapshot.deployments.map((d) => d.id).sort(), ['d1', 'd2']);
    assert.equal(
      snapshot.deployments.reduce((sum, d) => sum + d.requestsInWindow, 0),
      1,
      'the one request is in the window',
    );
    for (const deployment of snapshot.deployments) {
      assert.equal(deployment.circuit, 'closed');
      assert.equal(deployment.cooldownUntil, 0);
    }
    // Bearer works as well as api-key.
    assert.equal((await adminPools(g, { authorization: `Bearer ${ADMIN_KEY}` })).status, 200);
  });
});

/** One gateway instance on `redisUrl` whose log lines are kept. */
interface Instance {
  url: string;
  lines: LogLine[];
  close(): Promise<void>;
}

async function instance(config: GatewayConfig, redisUrl = process.env.REDIS_URL!): Promise<Instance> {
  const store = new RedisStore(redisUrl, { windowMs: admissionWindowMs(config.gateway.windowMs) });
  const { logger, lines } = memoryLogger();
  const gateway = createGateway({ config, store, logger, adminApiKey: ADMIN_KEY });
  const { url } = await gateway.listen(0);
  return {
    url,
    lines,
    async close() {
      await gateway.close();
      await store.close();
      logger.close();
    },
  };
}

interface ActionAnswer {
  action: string;
  pool: string;
  changed?: boolean;
  scope: 'cluster' | 'instance';
  deployment: DeploymentSnapshot;
}

async function act(
  url: string,
  pool: string,
  id: string,
  action: string,
  headers: Record<string, string> = { 'api-key': ADMIN_KEY },
): Promise<{ status: number; body: ActionAnswer & { error?: { code: string; message: string } }; text: string }> {
  const response = await fetch(`${url}/admin/pools/${encodeURIComponent(pool)}/deployments/${encodeURIComponent(id)}/${action}`, {
    method: 'POST',
    headers,
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  return { status: response.status, body: JSON.parse(text) as ActionAnswer, text };
}

async function deploymentsOf(url: string, pool: string): Promise<DeploymentSnapshot[]> {
  const response = await fetch(`${url}/admin/pools`, { headers: { 'api-key': ADMIN_KEY }, signal: AbortSignal.timeout(10_000) });
  assert.equal(response.status, 200);
  const body = (await response.json()) as { pools: Record<string, { deployments: DeploymentSnapshot[] }> };
  return body.pools[pool]!.deployments;
}

/** `count` sequential requests, each read whole; the deployment that answered each. */
async function servedBy(url: string, pool: string, count: number): Promise<string[]> {
  const served: string[] = [];
  for (let i = 0; i < count; i++) {
    const response = await chat(url, pool);
    await response.arrayBuffer();
    assert.equal(response.status, 200);
    served.push(String(response.headers.get('x-gateway-deployment')));
  }
  return served;
}

const actionLines = (lines: LogLine[], action: string) => lines.filter((l) => l.action === action && l.message.startsWith('admin:'));

describe('admin: drain, enable, reset across instances', () => {
  let sim: Simulator;
  const open: Instance[] = [];
  /** d1 takes every request while it is in rotation (priority 1); d2 the rest. */
  const poolConfig = (pool: string, gateway: Record<string, unknown> = {}, endpoint = sim.url) =>
    testConfig({
      pools: {
        [pool]: {
          deployments: [
            { id: 'd1', endpoint, priority: 1 },
            { id: 'd2', endpoint, priority: 2 },
          ],
        },
      },
      gateway,
    });
  const deployments: SimDeployment[] = [{ name: 'd1', latency: { ttftMs: 0, perTokenMs: 60 } }, { name: 'd2' }];

  before(async () => {
    sim = await simulator(deployments);
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((i) => i.close()));
    sim.setFault('d1', null);
    sim.reset();
  });
  after(() => sim.close());

  async function pair(gateway: Record<string, unknown> = {}, redisUrl?: string): Promise<{ pool: string; a: Instance; b: Instance }> {
    const pool = uniquePool();
    const config = poolConfig(pool, gateway);
    const [a, b] = [await instance(config, redisUrl), await instance(config, redisUrl)];
    open.push(a, b);
    return { pool, a, b };
  }

  test('drain on A: B sends nothing there, a stream in flight on it finishes whole; enable on B brings it back; both idempotent and logged with who', async () => {
    const { pool, a, b } = await pair();
    assert.deepEqual(await servedBy(b.url, pool, 2), ['d1', 'd1']);
    const stream = await chat(b.url, pool, { stream: true, body: { max_tokens: 20 } }); // ~1.2 s on d1
    assert.equal(stream.headers.get('x-gateway-deployment'), 'd1');

    const started = Date.now();
    const drained = await act(a.url, pool, 'd1', 'drain', { 'api-key': ADMIN_KEY, 'x-admin-user': 'alice@example.com' });
    assert.equal(drained.status, 200, drained.text);
    assert.deepEqual([drained.body.action, drained.body.pool, drained.body.changed, drained.body.scope], ['drain', pool, true, 'cluster']);
    assert.deepEqual([drained.body.deployment.id, drained.body.deployment.drained], ['d1', true]);
    assert.equal(drained.body.deployment.inFlight, 1, 'the stream is still in flight on it');
    const again = await act(a.url, pool, 'd1', 'drain');
    assert.deepEqual([again.status, again.body.changed, again.body.deployment.drained], [200, false, true], 'drained twice: one state');

    const receivedBefore = sim.stats('d1').received;
    assert.deepEqual(new Set(await servedBy(b.url, pool, 10)), new Set(['d2']), 'B sends everything to d2');
    assert.deepEqual(new Set(await servedBy(a.url, pool, 5)), new Set(['d2']), 'and so does A');
    assert.equal(sim.stats('d1').received, receivedBefore, 'd1 received nothing after the drain');

    const text = await stream.text();
    assert.ok(text.trimEnd().endsWith('data: [DONE]'), 'the stream started before the drain finished whole');
    assert.equal(sim.stats('d1').served, 3, 'served whole on d1');
    assert.equal((await deploymentsOf(b.url, pool)).find((d) => d.id === 'd1')?.inFlight, 0);

    const enabled = await act(b.url, pool, 'd1', 'enable', { 'api-key': ADMIN_KEY, 'x-admin-user': 'bob' });
    assert.deepEqual([enabled.status, enabled.body.changed, enabled.body.deployment.drained], [200, true, false]);
    const enabledAgain = await act(b.url, pool, 'd1', 'enable', { authorization: `Bearer ${ADMIN_KEY}`, 'x-admin-user': 'bob' });
    assert.deepEqual([enabledAgain.status, enabledAgain.body.changed], [200, false]);
    assert.deepEqual(await servedBy(a.url, pool, 3), ['d1', 'd1', 'd1'], 'back in rotation for A too');

    const drains = actionLines(a.lines, 'drain');
    assert.deepEqual(
      drains.map((l) => [l.who, l.changed, l.pool, l.deployment, l.scope]),
      [
        ['alice@example.com', true, pool, 'd1', 'cluster'],
        ['admin', false, pool, 'd1', 'cluster'],
      ],
    );
    for (const line of drains) {
      assert.match(String(line.from), /127\.0\.0\.1/);
      const at = Date.parse(String(line.at));
      assert.ok(at >= started - 1000 && at <= Date.now(), `when: ${String(line.at)}`);
    }
    assert.deepEqual(
      actionLines(b.lines, 'enable').map((l) => [l.who, l.changed]),
      [
        ['bob', true],
        ['bob', false],
      ],
    );
    assert.ok(!JSON.stringify([...a.lines, ...b.lines]).includes(ADMIN_KEY), 'the admin key is never logged');
  });

  test('reset clears a cooldown (a 429 storm) and an open circuit, for every instance', async () => {
    const { pool, a, b } = await pair({ outlier: { consecutiveFailures: 2, baseEjectionMs: 60_000 } });
    sim.setFault('d1', { fault: { kind: 'storm-429', retryAfterMs: 60_000 } });
    assert.deepEqual(await servedBy(a.url, pool, 1), ['d2'], 'd1 throttled, cooling down for a minute');
    sim.setFault('d1', null);
    const cooling = (await deploymentsOf(b.url, pool)).find((d) => d.id === 'd1')!;
    assert.ok(cooling.cooldownUntil > Date.now() + 50_000, 'cooling down cluster-wide');
    assert.deepEqual(await servedBy(b.url, pool, 2), ['d2', 'd2']);
    const reset = await act(b.url, pool, 'd1', 'reset', { 'api-key': ADMIN_KEY, 'x-admin-user': 'carol' });
    assert.equal(reset.status, 200, reset.text);
    assert.deepEqual(
      [reset.body.deployment.cooldownUntil, reset.body.deployment.circuit, reset.body.deployment.drained],
      [0, 'closed', false],
    );
    assert.ok(reset.body.deployment.resetAt > 0);
    assert.deepEqual(await servedBy(a.url, pool, 2), ['d1', 'd1'], 'A sends to d1 again');

    sim.setFault('d1', { fault: { kind: 'status', status: 503 } });
    assert.deepEqual(await servedBy(a.url, pool, 2), ['d2', 'd2'], 'two failures in a row on d1, failed over');
    await until(
      async () => (await deploymentsOf(b.url, pool)).find((d) => d.id === 'd1')?.circuit === 'open',
      3000,
      'd1 ejected for every instance',
    );
    sim.setFault('d1', null);
    assert.deepEqual(await servedBy(b.url, pool, 2), ['d2', 'd2'], 'B keeps off it');
    const closed = await act(a.url, pool, 'd1', 'reset');
    assert.deepEqual([closed.status, closed.body.deployment.circuit, closed.body.deployment.circuitOpenUntil], [200, 'closed', 0]);
    assert.deepEqual(await servedBy(b.url, pool, 2), ['d1', 'd1'], 'B sends to d1 again');
    assert.deepEqual(
      actionLines(b.lines, 'reset').map((l) => l.who),
      ['carol'],
    );
    assert.deepEqual(
      actionLines(a.lines, 'reset').map((l) => l.who),
      ['admin'],
    );
  });

  test('/admin/pools shows drained; 401 without the key; Azure-shaped 404 for an unknown pool, deployment or action', async () => {
    const { pool, a } = await pair();
    assert.equal((await deploymentsOf(a.url, pool)).find((d) => d.id === 'd1')?.drained, false);
    for (const headers of [{}, { 'api-key': 'wrong-admin-key' }, { 'api-key': CLIENT_KEY }] as Record<string, string>[]) {
      const refused = await act(a.url, pool, 'd1', 'drain', headers);
      assert.equal(refused.status, 401, JSON.stringify(headers));
      assert.equal(refused.body.error?.code, '401');
    }
    assert.equal((await deploymentsOf(a.url, pool)).find((d) => d.id === 'd1')?.drained, false, 'a refused drain changes nothing');

    const unknownDeployment = await act(a.url, pool, 'd9', 'drain');
    assert.deepEqual([unknownDeployment.status, unknownDeployment.body.error?.code], [404, 'DeploymentNotFound']);
    assert.match(unknownDeployment.body.error?.message ?? '', /no deployment "d9"/);
    const unknownPool = await act(a.url, 'no-such-pool', 'd1', 'drain');
    assert.deepEqual([unknownPool.status, unknownPool.body.error?.code], [404, 'DeploymentNotFound']);
    const unknownAction = await act(a.url, pool, 'd1', 'explode');
    assert.deepEqual([unknownAction.status, unknownAction.body.error?.code], [404, '404']);
    const byGet = await fetch(`${a.url}/admin/pools/${pool}/deployments/d1/drain`, { headers: { 'api-key': ADMIN_KEY } });
    assert.equal(byGet.status, 404, 'actions are POST only');
    await byGet.arrayBuffer();
    assert.equal(actionLines(a.lines, 'drain').length, 0, 'nothing refused was logged as an action');

    const drained = await act(a.url, pool, 'd2', 'drain', { 'api-key': ADMIN_KEY, 'x-admin-user': 'eve <script>\u00e9' });
    assert.equal(drained.status, 200);
    assert.deepEqual(
      (await deploymentsOf(a.url, pool)).map((d) => [d.id, d.drained]),
      [
        ['d1', false],
        ['d2', true],
      ],
    );
    assert.equal(actionLines(a.lines, 'drain')[0]?.who, 'eve__script_\u00e9', 'sanitised');
  });

  test('adminUser: bounded, sanitised, "admin" when absent', () => {
    assert.equal(adminUser(undefined), 'admin');
    assert.equal(adminUser('   '), 'admin');
    assert.equal(adminUser('ops.team+oncall@example.com'), 'ops.team+oncall@example.com');
    assert.equal(adminUser('a\nb\r\u0000"c"'), 'a_b___c_');
    assert.equal(adminUser('x'.repeat(500)).length, 64);
    assert.equal(adminUser(['first', 'second']), 'first');
  });

  describe('while Redis is down', () => {
    let redis: RedisServer;
    afterEach(async () => {
      if (redis.process.signalCode === null && redis.process.exitCode === null) redis.process.kill('SIGCONT');
      await redis.stop();
    });

    test('a drain is applied to the instance’s own view at once and published when Redis answers', async () => {
      redis = await startRedisServer();
      const { pool, a, b } = await pair({}, redis.url);
      assert.deepEqual(await servedBy(a.url, pool, 1), ['d1']);
      redis.process.kill('SIGSTOP');
      assert.deepEqual(await servedBy(a.url, pool, 1), ['d1'], 'A finds Redis frozen (its command timeout) and goes on on its own view');

      const started = performance.now();
      const drained = await act(a.url, pool, 'd1', 'drain', { 'api-key': ADMIN_KEY, 'x-admin-user': 'dave' });
      assert.ok(performance.now() - started < 500, 'no wait for Redis');
      assert.deepEqual(
        [drained.status, drained.body.changed, drained.body.scope, drained.body.deployment.drained],
        [200, true, 'instance', true],
      );
      const receivedBefore = sim.stats('d1').received;
      assert.deepEqual(new Set(await servedBy(a.url, pool, 5)), new Set(['d2']), 'A keeps off d1 during the outage');
      assert.equal(sim.stats('d1').received, receivedBefore);

      redis.process.kill('SIGCONT');
      await until(
        async () => (await deploymentsOf(b.url, pool)).find((d) => d.id === 'd1')?.drained === true,
        5000,
        'the drain to reach Redis',
      );
      assert.deepEqual(new Set(await servedBy(b.url, pool, 5)), new Set(['d2']), 'B keeps off d1');
      assert.equal(sim.stats('d1').received, receivedBefore);
      assert.deepEqual(
        actionLines(a.lines, 'drain').map((l) => [l.who, l.scope]),
        [['dave', 'instance']],
      );

      const enabled = await act(b.url, pool, 'd1', 'enable');
      assert.deepEqual([enabled.body.scope, enabled.body.deployment.drained], ['cluster', false]);
      await until(async () => (await servedBy(a.url, pool, 1))[0] === 'd1', 5000, 'A back on the shared state, d1 back in rotation');
    });
  });
});
