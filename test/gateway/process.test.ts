import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Simulator } from '../../shared/simulator/index.ts';
import { createStore } from '../../shared/store/index.ts';
import type { PoolLayout, Store } from '../../shared/store/types.ts';
import { spawnGateway, testConfig, type GatewayProcess } from '../helpers/gateway.ts';
import { chat, simulator, uniquePool, until } from '../helpers/fixtures.ts';

describe('gateway processes', () => {
  let sim: Simulator;
  let store: Store;
  const processes: GatewayProcess[] = [];
  before(async () => {
    sim = await simulator(['d1', 'd2']);
    store = createStore({ redisUrl: process.env.REDIS_URL });
  });
  after(async () => {
    await Promise.all(processes.map((p) => p.stop('SIGKILL')));
    await store.close();
    await sim.close();
  });

  test('kill -9 of an instance mid-load: its leases are reaped and in-flight returns to true', async () => {
    const pool = uniquePool();
    const config = testConfig({
      pools: {
        [pool]: {
          deployments: [
            { id: 'd1', endpoint: sim.url },
            { id: 'd2', endpoint: sim.url },
          ],
        },
      },
      gateway: { leaseMs: 1500 },
    });
    const layout: PoolLayout = {
      name: pool,
      strategy: 'least-requests',
      deployments: [
        { id: 'd1', priority: 1, weight: 1 },
        { id: 'd2', priority: 1, weight: 1 },
      ],
    };
    const [victim, survivor] = await Promise.all([spawnGateway(config), spawnGateway(config)]);
    processes.push(victim!, survivor!);
    sim.setFault('d1', { fault: { kind: 'hang' } });
    sim.setFault('d2', { fault: { kind: 'hang' } });
    const pending = Array.from({ length: 4 }, () => chat(victim!.url, pool).catch(() => undefined));
    const total = async () => (await store.snapshot(layout)).reduce((sum, d) => sum + d.inFlight, 0);
    await until(async () => (await total()) === 4, 3000, 'four leases');
    // The victim renews its leases while alive: they outlive their first deadline.
    await new Promise((resolve) => setTimeout(resolve, 1800));
    assert.equal(await total(), 4, 'live leases are renewed');
    const killedAt = Date.now();
    await victim!.stop('SIGKILL');
    await Promise.all(pending);
    await until(async () => (await total()) === 0, 4000, 'the dead instance’s leases to be reaped');
    const reapedAfter = Date.now() - killedAt;
    assert.ok(reapedAfter <= 1500 + 1000, `reaped ${reapedAfter} ms after the kill, within the lease`);
    // The survivor routes evenly again: its first two requests spread over both deployments.
    sim.reset();
    const responses = await Promise.all([chat(survivor!.url, pool), chat(survivor!.url, pool)]);
    assert.deepEqual(
      responses.map((r) => r.status),
      [200, 200],
    );
    assert.deepEqual(new Set(responses.map((r) => r.headers.get('x-gateway-deployment'))), new Set(['d1', 'd2']));
  });

  test('SIGTERM stops the process cleanly and logs one JSON line per request', async () => {
    const pool = uniquePool();
    const gw = await spawnGateway(testConfig({ pools: { [pool]: { deployments: [{ id: 'd1', endpoint: sim.url }] } } }));
    processes.push(gw);
    const response = await chat(gw.url, pool, { headers: { 'x-request-id': 'log-check-1' } });
    assert.equal(response.status, 200);
    await until(() => gw.logs.some((l) => l.requestId === 'log-check-1'), 2000, 'the request log line');
    const line = gw.logs.find((l) => l.requestId === 'log-check-1')!;
    assert.equal(line.pool, pool);
    assert.equal(line.deployment, 'd1');
    assert.equal(line.status, 200);
    assert.equal(line.attempts, 1);
    assert.equal(line.client, 'tests');
    assert.equal(typeof line.latencyMs, 'number');
    assert.ok(Number(line.totalTokens) > 0, 'tokens from upstream usage');
    const everything = JSON.stringify(gw.logs);
    assert.ok(!everything.includes('upstream-test-key') && !everything.includes('client-test-key'), 'no key in any log line');
    await gw.stop('SIGTERM');
    assert.equal(gw.child.exitCode, 0);
  });

  test('an invalid config stops start-up with one line per problem', () => {
    const dir = mkdtempSync(join(tmpdir(), 'spillway-bad-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(
      file,
      'pools:\n  p:\n    strategy: fastest\n    deployments:\n      - {id: a, endpoint: nope, deployment: d, apiKey: "${MISSING_KEY_VAR}", tpm: 0}\n',
    );
    const result = spawnSync(process.execPath, ['gateway/main.ts'], {
      env: { ...process.env, GATEWAY_CONFIG: file, PORT: '0' },
      encoding: 'utf8',
      timeout: 10_000,
    });
    assert.equal(result.status, 1);
    assert.equal(
      result.stderr.trim(),
      [
        `spillway: invalid config ${file}:`,
        '  - pools.p.deployments[0].apiKey: environment variable MISSING_KEY_VAR is not set',
        '  - pools.p.strategy: must be one of least-requests, round-robin, random, power-of-two, weighted',
        '  - pools.p.deployments[0].endpoint: must be an http(s) URL',
        '  - pools.p.deployments[0].tpm: must be positive',
      ].join('\n'),
    );
  });
});
