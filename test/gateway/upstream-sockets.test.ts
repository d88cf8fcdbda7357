/**
 * No hidden cap on upstream sockets: gateway.upstreamMaxSockets bounds them per origin, and what waits
 * behind that bound is visible in /metrics (spillway_upstream_queued_requests), with the sockets in use
 * and idle (spillway_upstream_sockets).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Simulator } from '../../shared/simulator/index.ts';
import { chat, simulator, uniquePool, until } from '../helpers/fixtures.ts';
import { startGateway, testConfig, type RunningGateway } from '../helpers/gateway.ts';

describe('upstream sockets per origin', () => {
  let sim: Simulator;
  let gateway: RunningGateway;
  const pool = uniquePool();
  before(async () => {
    sim = await simulator(['s1']);
    const config = testConfig({
      pools: { [pool]: { deployments: [{ id: 's1', endpoint: sim.url }] } },
      gateway: { upstreamMaxSockets: 2 },
    });
    gateway = await startGateway(config, { memory: true });
  });
  after(async () => {
    await gateway?.close();
    await sim?.close();
  });

  const origin = () => new URL(sim.url).host;
  const metric = async (line: RegExp) => {
    const text = await (await fetch(`${gateway.url}/metrics`)).text();
    const found = text.split('\n').find((l) => line.test(l));
    return found === undefined ? undefined : Number(found.split(' ').pop());
  };
  const queued = () => metric(new RegExp(`^spillway_upstream_queued_requests\\{origin="${origin()}"\\}`));
  const sockets = (state: string) => metric(new RegExp(`^spillway_upstream_sockets\\{origin="${origin()}",state="${state}"\\}`));

  test('past upstreamMaxSockets attempts wait for a socket, and /metrics shows them waiting', async () => {
    sim.setFault('s1', { fault: { kind: 'slow-first-byte', delayMs: 1500 }, count: 4 });
    const replies = Array.from({ length: 4 }, () => chat(gateway.url, pool));
    await until(async () => (await queued()) === 2, 3000, 'two attempts waiting for a socket');
    assert.equal(await sockets('active'), 2, 'two sockets in use: the bound');
    assert.equal(sim.stats('s1').inFlight, 2, 'the simulator sees only two at once');
    for (const reply of await Promise.all(replies)) assert.equal(reply.status, 200);
    assert.equal(await queued(), 0, 'nothing waits once they are done');
    assert.equal(await sockets('active'), 0);
    assert.equal(await sockets('idle'), 2, 'the sockets are kept alive for the next attempts');
  });
});
