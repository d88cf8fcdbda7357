/**
 * The admin API (README: ADMIN_API_KEY guards /admin/*; absent, the admin routes answer 404):
 * a cluster-wide snapshot of every pool's deployments.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Simulator } from '../../shared/simulator/index.ts';
import { CLIENT_KEY, startGateway, testConfig, type RunningGateway } from '../helpers/gateway.ts';
import { chat, simulator, uniquePool } from '../helpers/fixtures.ts';

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
