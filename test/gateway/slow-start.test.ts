/**
 * Slow start end to end, on the test Redis and the simulator: a long cooldown after a 429 ends in a
 * slow start (a short one does not); and a deployment the prober brings back from an open circuit
 * gets a small share of new requests at first and about half by the end of the pool's slowStartMs,
 * through two instances (one of which had its local breaker open), as the simulator counts them.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import type { GatewayConfig } from '../../shared/config/schema.ts';
import type { Simulator } from '../../shared/simulator/index.ts';
import type { DeploymentSnapshot } from '../../shared/store/types.ts';
import { startProber, type Prober } from '../../gateway/background/prober.ts';
import { LiveConfig } from '../../gateway/live-config.ts';
import { createLogger } from '../../gateway/logger.ts';
import { Metrics } from '../../gateway/metrics.ts';
import { UpstreamCredentials } from '../../gateway/upstream/credentials.ts';
import { chat, simulator, sleep, uniquePool, until } from '../helpers/fixtures.ts';
import { startGateway, testConfig, type RunningGateway } from '../helpers/gateway.ts';

const SLOW_START_MS = 3000;
const LONG_MS = 60_000;
const logger = createLogger('error', process.env.SPILLWAY_TEST_LOGS !== '1');

describe('slow start', () => {
  let sim: Simulator;
  const running: RunningGateway[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  before(async () => {
    sim = await simulator(['d1', 'd2']);
  });
  afterEach(async () => {
    await Promise.all(cleanups.splice(0).map((close) => close()));
    await Promise.all(running.splice(0).map((g) => g.close()));
    sim.reset();
  });
  after(() => sim.close());

  function configOf(pool: string, slowStartMs: number): GatewayConfig {
    const base = testConfig({
      pools: {
        [pool]: {
          slowStartMs,
          deployments: [
            { id: 'd1', endpoint: sim.url },
            { id: 'd2', endpoint: sim.url },
          ],
        },
      },
      gateway: {
        breaker: { resetTimeoutMs: LONG_MS, volumeThreshold: 5 },
        outlier: { consecutiveFailures: 5, baseEjectionMs: LONG_MS, maxEjectionMs: LONG_MS },
      },
    });
    // The instances run no lane of their own: the test starts the prober.
    return { ...base, background: { ...base.background, workers: false, probeIntervalMs: 200 } };
  }

  async function gateways(config: GatewayConfig, count: number): Promise<RunningGateway[]> {
    const started = await Promise.all(Array.from({ length: count }, () => startGateway(config)));
    running.push(...started);
    return started;
  }

  function prober(config: GatewayConfig, g: RunningGateway): Prober {
    const connection = new Redis(process.env.REDIS_URL!, { maxRetriesPerRequest: null });
    const started = startProber({
      connection,
      prefix: `test-slow-start-${randomUUID().slice(0, 8)}`,
      config: new LiveConfig(config),
      store: g.store,
      credentials: UpstreamCredentials.keysOnly(logger),
      metrics: new Metrics(false),
      logger,
    });
    cleanups.push(async () => {
      await started.close();
      connection.disconnect();
    });
    return started;
  }

  async function stateOf(g: RunningGateway, config: GatewayConfig, pool: string, id: string): Promise<DeploymentSnapshot> {
    const layout = new LiveConfig(config).current.pools.get(pool)!.layout;
    return (await g.store.snapshot(layout)).find((d) => d.id === id)!;
  }

  test('a long cooldown after a 429 ends in a slow start; a short one does not', async () => {
    const long = uniquePool('long');
    const short = uniquePool('short');
    const cases = [
      { pool: long, retryAfterMs: 20_000 },
      // Below gateway.longCooldownMs (10 s): a per-minute limit, back at full traffic.
      { pool: short, retryAfterMs: 2000 },
    ];
    const results: DeploymentSnapshot[] = [];
    for (const { pool, retryAfterMs } of cases) {
      const config = configOf(pool, SLOW_START_MS);
      const [g] = await gateways(config, 1);
      sim.setFault('d1', { fault: { kind: 'storm-429', retryAfterMs }, count: 1 });
      for (let i = 0; i < 30 && (await stateOf(g!, config, pool, 'd1')).cooldownUntil === 0; i++)
        await (await chat(g!.url, pool)).arrayBuffer();
      results.push(await stateOf(g!, config, pool, 'd1'));
      sim.setFault('d1', null);
    }
    const [cooledLong, cooledShort] = results;
    assert.ok(cooledLong!.cooldownUntil > Date.now() + 15_000, 'cooling down for its retry-after');
    assert.equal(cooledLong!.slowStartSince, cooledLong!.cooldownUntil, 'the slow start begins when the cooldown ends');
    assert.ok(cooledShort!.cooldownUntil > Date.now(), 'cooling down');
    assert.equal(cooledShort!.slowStartSince, 0, 'no slow start after a short cooldown');
  });

  test('back from an open circuit by the prober: a small share of new requests first, about half by the end', async (t) => {
    const pool = uniquePool();
    const config = configOf(pool, SLOW_START_MS);
    const [a, b] = await gateways(config, 2);
    sim.setFault('d1', { fault: { kind: 'status', status: 500 } });
    for (let i = 0; i < 40 && (await stateOf(a!, config, pool, 'd1')).circuit !== 'open'; i++)
      await (await chat(a!.url, pool)).arrayBuffer();
    assert.equal((await stateOf(a!, config, pool, 'd1')).circuit, 'open', 'taken out by the passive health of instance a');

    sim.setFault('d1', null);
    prober(config, a!);
    await until(async () => (await stateOf(a!, config, pool, 'd1')).circuit === 'closed', 3000, 'the prober to bring d1 back');
    const since = (await stateOf(a!, config, pool, 'd1')).slowStartSince;
    assert.ok(since > 0 && since <= Date.now());

    const scrape = await (await fetch(`${a!.url}/metrics`)).text();
    const share = (id: string) =>
      Number(new RegExp(`spillway_deployment_slow_start_share\\{pool="${pool}",deployment="${id}"\\} (\\S+)`).exec(scrape)?.[1]);
    assert.ok(share('d1') >= 0.1 && share('d1') < 0.6, `d1's share on /metrics while it ramps: ${share('d1')}`);
    assert.equal(share('d2'), 1);

    // Requests one at a time through both instances, until a second past the ramp (bounded in count too).
    const picks: { at: number; d1: boolean }[] = [];
    for (let i = 0; i < 1500 && Date.now() < since + SLOW_START_MS + 1000; i++) {
      const response = await chat((i % 2 === 0 ? a : b)!.url, pool);
      assert.equal(response.status, 200);
      picks.push({ at: Date.now() - since, d1: response.headers.get('x-gateway-deployment') === 'd1' });
      await response.arrayBuffer();
      await sleep(2);
    }
    const shareOf = (from: number, to: number) => {
      const inRange = picks.filter((p) => p.at >= from && p.at < to);
      assert.ok(inRange.length >= 40, `enough requests between ${from} and ${to} ms (${inRange.length})`);
      return inRange.filter((p) => p.d1).length / inRange.length;
    };
    const first = shareOf(0, 1000);
    const past = shareOf(SLOW_START_MS, SLOW_START_MS + 1000);
    t.diagnostic(`d1's share: ${first.toFixed(2)} in the first second, ${past.toFixed(2)} after the ramp (${picks.length} requests)`);
    // Expected about 0.12 (a share of 0.1 → 0.4, halved by the tie between two deployments) and 0.5.
    assert.ok(first < 0.3, `a small share first: ${first.toFixed(2)}`);
    assert.ok(past > 0.35 && past < 0.65, `about half by the end: ${past.toFixed(2)}`);
    assert.ok(past - first > 0.15, 'the share grew');
  });
});
