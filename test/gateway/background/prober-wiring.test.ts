/**
 * The prober as a gateway runs it (app.ts → background/assemble.ts), not started by hand: a
 * deployment in a long cooldown is probed by the instance's own scheduler, comes back with a slow
 * start, and /admin/pools shows its latest probe and the pool's lane.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { Simulator } from '../../../shared/simulator/index.ts';
import { simulator, uniquePool, until } from '../../helpers/fixtures.ts';
import { startGateway, testConfig, type RunningGateway } from '../../helpers/gateway.ts';

const ADMIN_KEY = 'prober-wiring-admin-key';

interface PoolsAnswer {
  pools: Record<
    string,
    {
      lane?: { waiting: number; delayed: number; active: number };
      deployments: { id: string; cooldownUntil: number; slowStartSince: number; lastProbe?: { at: number; result: string } | null }[];
    }
  >;
}

describe('the prober in a running gateway', () => {
  let sim: Simulator;
  let gateway: RunningGateway;
  const pool = uniquePool();
  before(async () => {
    sim = await simulator(['p1', 'p2']);
    const config = testConfig({
      pools: {
        [pool]: {
          slowStartMs: 60_000,
          deployments: [
            { id: 'p1', endpoint: sim.url },
            { id: 'p2', endpoint: sim.url },
          ],
        },
      },
      background: { probeIntervalMs: 300 },
    });
    // Its own lane prefix: the scheduler's interval is this test's, not the other tests'.
    gateway = await startGateway(config, { adminApiKey: ADMIN_KEY, backgroundPrefix: `test-${randomUUID().slice(0, 8)}` });
  });
  after(async () => {
    await gateway?.close();
    await sim?.close();
  });

  const pools = async () => {
    const response = await fetch(`${gateway.url}/admin/pools`, { headers: { 'api-key': ADMIN_KEY } });
    assert.equal(response.status, 200);
    return ((await response.json()) as PoolsAnswer).pools[pool]!;
  };

  test('a long cooldown is probed, ended early with a slow start, and the probe shows in /admin/pools', async () => {
    const before = await pools();
    assert.deepEqual(before.lane, { waiting: 0, delayed: 0, active: 0 }, 'the pool’s lane is shown');
    assert.deepEqual(
      before.deployments.map((d) => d.lastProbe),
      [null, null],
      'nothing probed yet',
    );

    await gateway.store.cooldown(pool, 'p1', 120_000);
    await until(async () => (await pools()).deployments[0]!.cooldownUntil === 0, 8000, 'the prober ended p1’s cooldown');
    const [p1, p2] = (await pools()).deployments;
    assert.ok(p1!.slowStartSince > 0 && p1!.slowStartSince <= Date.now(), 'p1 comes back by slow start');
    assert.equal(p1!.lastProbe?.result, 'pass');
    assert.ok(Date.now() - p1!.lastProbe!.at < 8000, 'the probe is recent');
    assert.equal(p2!.lastProbe, null, 'a deployment in rotation is not probed');
    const probes = sim.recentRequests('p1').filter((r) => r.clientRequestId?.startsWith('probe_'));
    assert.ok(probes.length >= 1, 'the probe reached the deployment, marked');
    assert.equal(sim.recentRequests('p2').filter((r) => r.clientRequestId?.startsWith('probe_')).length, 0);
  });
});
