/**
 * The cluster-wide prober on the test Redis, against the simulator over HTTP, beside real gateway
 * instances (their own lanes off: the probers here are started by the test, one per instance, sharing
 * one BullMQ prefix as a cluster's instances do). A circuit the passive health opened, and a long
 * cooldown after a 429, end early once the deployment answers a probe, long before their own
 * timers; a deployment still failing stays out and is probed again; a drained one and a pool with
 * `probe: off` are never probed; three instances send one probe per interval in all, and a run that
 * outlasts the interval does not overlap the next.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import type { GatewayConfig } from '../../../shared/config/schema.ts';
import type { RecordedRequest, Simulator } from '../../../shared/simulator/index.ts';
import type { DeploymentSnapshot, Store } from '../../../shared/store/types.ts';
import { startProber } from '../../../gateway/background/prober.ts';
import { LiveConfig } from '../../../gateway/live-config.ts';
import { createLogger } from '../../../gateway/logger.ts';
import { Metrics } from '../../../gateway/metrics.ts';
import { UpstreamCredentials } from '../../../gateway/upstream/credentials.ts';
import { chat, simulator, sleep, uniquePool, until } from '../../helpers/fixtures.ts';
import { startGateway, testConfig, type DeploymentInput, type RunningGateway } from '../../helpers/gateway.ts';

const INTERVAL_MS = 300;
/** Far longer than any test here: whatever ends sooner was ended by a probe. */
const LONG_MS = 60_000;
const logger = createLogger('error', process.env.SPILLWAY_TEST_LOGS !== '1');

interface RunningProber {
  metrics: Metrics;
  close(): Promise<void>;
}

/** Probes that reached a simulated deployment (the prober's request ids start with probe_). */
function probesAt(sim: Simulator, deployment: string): RecordedRequest[] {
  return sim.recentRequests(deployment).filter((r) => r.clientRequestId?.startsWith('probe_'));
}

async function probeCount(metrics: Metrics, labels: Record<string, string>): Promise<number> {
  const values = (await metrics.probes.get()).values;
  return values
    .filter((v) => Object.entries(labels).every(([k, value]) => (v.labels as Record<string, unknown>)[k] === value))
    .reduce((sum, v) => sum + v.value, 0);
}

describe('the cluster-wide prober', () => {
  let sim: Simulator;
  const running: RunningGateway[] = [];
  const probers: RunningProber[] = [];
  before(async () => {
    sim = await simulator(['d1', 'd2', 'd3', { name: 'e1', model: 'text-embedding-3-small' }]);
  });
  afterEach(async () => {
    await Promise.all(probers.splice(0).map((p) => p.close()));
    await Promise.all(running.splice(0).map((g) => g.close()));
    sim.reset();
  });
  after(() => sim.close());

  /** A config whose instances run no lane of their own (the test starts the probers). */
  function configOf(
    pools: Record<string, { deployments: Omit<DeploymentInput, 'endpoint'>[]; [key: string]: unknown }>,
    gateway: Record<string, unknown> = {},
  ) {
    const base = testConfig({
      pools: Object.fromEntries(
        Object.entries(pools).map(([name, pool]) => [
          name,
          { ...pool, deployments: pool.deployments.map((d) => ({ ...d, endpoint: sim.url })) },
        ]),
      ),
      gateway: {
        breaker: { resetTimeoutMs: LONG_MS, volumeThreshold: 5 },
        outlier: { consecutiveFailures: 5, baseEjectionMs: LONG_MS, maxEjectionMs: LONG_MS },
        ...gateway,
      },
    });
    return { ...base, background: { ...base.background, workers: false, probeIntervalMs: INTERVAL_MS } };
  }

  async function gateway(config: GatewayConfig): Promise<RunningGateway> {
    const g = await startGateway(config);
    running.push(g);
    return g;
  }

  /** One instance's prober, as the gateway runs it (its BullMQ connection, the config in force, the store). */
  function prober(config: GatewayConfig, store: Store, prefix: string, timeoutMs?: number): RunningProber {
    const connection = new Redis(process.env.REDIS_URL!, { maxRetriesPerRequest: null });
    const metrics = new Metrics(false);
    const started = startProber({
      connection,
      prefix,
      config: new LiveConfig(config),
      store,
      credentials: UpstreamCredentials.keysOnly(logger),
      metrics,
      logger,
      timeoutMs,
    });
    const running = {
      metrics,
      async close() {
        await started.close();
        connection.disconnect();
      },
    };
    probers.push(running);
    return running;
  }

  const newPrefix = () => `test-probe-${randomUUID().slice(0, 8)}`;

  async function stateOf(g: RunningGateway, config: GatewayConfig, pool: string, id: string): Promise<DeploymentSnapshot> {
    const layout = new LiveConfig(config).current.pools.get(pool)!.layout;
    return (await g.store.snapshot(layout)).find((d) => d.id === id)!;
  }

  /** Requests through `g` until the passive health took `id` out (a fault at the simulator fails them there). */
  async function openByRequests(g: RunningGateway, config: GatewayConfig, pool: string, id: string): Promise<void> {
    for (let i = 0; i < 40; i++) {
      await (await chat(g.url, pool)).arrayBuffer();
      if ((await stateOf(g, config, pool, id)).circuit === 'open') return;
    }
    assert.fail(`${id}'s circuit did not open`);
  }

  test('an open circuit: probed while it fails, back long before its reset timeout once it heals, and the local breaker lets it in', async () => {
    const pool = uniquePool();
    const config = configOf({ [pool]: { strategy: 'round-robin', deployments: [{ id: 'd1' }, { id: 'd2' }] } });
    const g = await gateway(config);
    sim.setFault('d1', { fault: { kind: 'status', status: 500 } });
    await openByRequests(g, config, pool, 'd1');
    const openedAt = Date.now();

    const { metrics } = prober(config, g.store, newPrefix());
    await until(() => probesAt(sim, 'd1').length >= 2, 3000, 'two probes of the failing deployment');
    assert.equal((await stateOf(g, config, pool, 'd1')).circuit, 'open', 'a failing probe leaves it out');
    assert.equal(probesAt(sim, 'd2').length, 0, 'the healthy deployment is not probed');

    sim.setFault('d1', null);
    await until(async () => (await stateOf(g, config, pool, 'd1')).circuit === 'closed', 3000, 'the prober to close the circuit');
    assert.ok(Date.now() - openedAt < 6000, 'back well before breaker.resetTimeoutMs (60 s)');
    const back = await stateOf(g, config, pool, 'd1');
    assert.ok(back.slowStartSince > 0, 'it comes back by slow start');
    assert.ok((await probeCount(metrics, { pool, deployment: 'd1', result: 'fail' })) >= 2);
    assert.equal(await probeCount(metrics, { pool, deployment: 'd1', result: 'pass' }), 1);

    const [probe] = probesAt(sim, 'd1').slice(-1);
    assert.deepEqual(
      [probe?.path, probe?.apiVersion, probe?.auth, probe?.status],
      ['/openai/deployments/d1/chat/completions', '2024-10-21', 'api-key', 200],
    );

    // This instance's own opossum breaker opened on those 500s; a lease the shared store grants closes it.
    const before = sim.stats('d1').served;
    for (let i = 0; i < 8; i++) assert.equal((await chat(g.url, pool)).status, 200);
    assert.ok(sim.stats('d1').served - before >= 3, 'the instance whose breaker opened sends there again');
  });

  test('a long cooldown after a 429: a throttled probe never shortens it, a passing one ends it', async () => {
    const pool = uniquePool();
    const config = configOf({ [pool]: { strategy: 'round-robin', deployments: [{ id: 'd1' }, { id: 'd2' }] } });
    const g = await gateway(config);
    sim.setFault('d1', { fault: { kind: 'storm-429', retryAfterMs: 120_000 }, count: 1 });
    for (let i = 0; i < 2; i++) assert.equal((await chat(g.url, pool)).status, 200);
    const cooled = await stateOf(g, config, pool, 'd1');
    assert.ok(cooled.cooldownUntil - Date.now() > 110_000, 'cooling down for its retry-after');

    // Still throttled, and asking for less than is left: the cooldown stays as it was.
    sim.setFault('d1', { fault: { kind: 'storm-429', retryAfterMs: 20_000 } });
    const { metrics } = prober(config, g.store, newPrefix());
    await until(() => probesAt(sim, 'd1').some((r) => r.status === 429), 3000, 'a throttled probe');
    await until(async () => (await probeCount(metrics, { pool, deployment: 'd1', result: 'throttled' })) >= 1, 2000, 'its result');
    assert.equal((await stateOf(g, config, pool, 'd1')).cooldownUntil, cooled.cooldownUntil, 'never shortened');

    sim.setFault('d1', null);
    await until(async () => (await stateOf(g, config, pool, 'd1')).cooldownUntil === 0, 3000, 'a passing probe to end the cooldown');
    assert.equal(await probeCount(metrics, { pool, deployment: 'd1', result: 'pass' }), 1);
    const before = sim.stats('d1').served;
    for (let i = 0; i < 4; i++) assert.equal((await chat(g.url, pool)).status, 200);
    assert.ok(sim.stats('d1').served > before, 'back in rotation');
  });

  test('a drained deployment and a pool with probe: off are never probed', async () => {
    const probed = uniquePool();
    const off = uniquePool();
    const config = configOf({
      [probed]: { deployments: [{ id: 'd1' }, { id: 'd3' }] },
      [off]: { probe: 'off', deployments: [{ id: 'd2' }] },
    });
    const g = await gateway(config);
    sim.setFault('d1', { fault: { kind: 'status', status: 503 } });
    await g.store.openCircuit(probed, 'd1', LONG_MS);
    // Out for long, but by an operator's hand: not the prober's to bring back.
    await g.store.openCircuit(probed, 'd3', LONG_MS);
    await g.store.cooldown(probed, 'd3', LONG_MS);
    await g.store.drain(probed, 'd3');
    await g.store.openCircuit(off, 'd2', LONG_MS);
    await g.store.cooldown(off, 'd2', LONG_MS);

    prober(config, g.store, newPrefix());
    await until(() => probesAt(sim, 'd1').length >= 4, 4000, 'several runs (the failing d1 is probed in each)');
    assert.equal(probesAt(sim, 'd3').length, 0, 'drained: never probed');
    assert.equal(probesAt(sim, 'd2').length, 0, 'probe: off: never probed');
    const d3 = await stateOf(g, config, probed, 'd3');
    assert.deepEqual([d3.circuit, d3.drained], ['open', true], 'left as the operator and the breaker had it');
  });

  test('the probe fits the pool: embeddings for an embeddings pool, at the deployment’s own api-version', async () => {
    const embeddings = uniquePool('emb');
    const chatPool = uniquePool('chat');
    const config = configOf({
      [embeddings]: { probe: 'embeddings', deployments: [{ id: 'e1', apiVersion: '2024-06-01' }] },
      // The same embeddings deployment probed with a chat call: Azure refuses the operation, the probe fails.
      [chatPool]: { probe: 'chat', deployments: [{ id: 'e1' }] },
    });
    const g = await gateway(config);
    await g.store.openCircuit(embeddings, 'e1', LONG_MS);
    await g.store.openCircuit(chatPool, 'e1', LONG_MS);
    const { metrics } = prober(config, g.store, newPrefix());
    await until(async () => (await stateOf(g, config, embeddings, 'e1')).circuit === 'closed', 3000, 'the embeddings probe to pass');
    const probe = probesAt(sim, 'e1').find((r) => r.path.endsWith('/embeddings'));
    assert.deepEqual([probe?.path, probe?.apiVersion, probe?.status], ['/openai/deployments/e1/embeddings', '2024-06-01', 200]);
    await until(async () => (await probeCount(metrics, { pool: chatPool, result: 'fail' })) >= 2, 3000, 'the chat probes to fail');
    assert.equal((await stateOf(g, config, chatPool, 'e1')).circuit, 'open');
  });

  test('three instances: one probe per deployment per interval in all, not one each', async (t) => {
    const pool = uniquePool();
    const config = configOf({ [pool]: { strategy: 'round-robin', deployments: [{ id: 'd1' }, { id: 'd2' }] } });
    const instances = await Promise.all([0, 1, 2].map(() => gateway(config)));
    sim.setFault('d1', { fault: { kind: 'status', status: 500 } });
    await openByRequests(instances[0]!, config, pool, 'd1');
    const prefix = newPrefix();
    const cluster = instances.map((g) => prober(config, g.store, prefix));
    await until(() => probesAt(sim, 'd1').length >= 1, 3000, 'the first probe');

    const from = Date.now();
    await sleep(10 * INTERVAL_MS);
    const to = Date.now();
    const inWindow = probesAt(sim, 'd1').filter((r) => r.at >= from && r.at < to).length;
    const intervals = (to - from) / INTERVAL_MS;
    t.diagnostic(`${inWindow} probes in ${intervals.toFixed(1)} intervals`);
    assert.ok(inWindow >= intervals / 2 && inWindow <= intervals + 2, `${inWindow} probes in ${intervals.toFixed(1)} intervals`);
    const counted = await Promise.all(cluster.map((p) => probeCount(p.metrics, { pool, deployment: 'd1' })));
    assert.equal(
      counted.reduce((a, b) => a + b, 0),
      probesAt(sim, 'd1').length,
      'every probe the simulator saw was sent once, by one instance',
    );
  });

  test('the probes of a run go out together; a run that outlasts the interval never overlaps the next, on any instance', async () => {
    const pool = uniquePool();
    const config = configOf({ [pool]: { deployments: [{ id: 'd1' }, { id: 'd2' }, { id: 'd3' }] } });
    const instances = await Promise.all([0, 1, 2].map(() => gateway(config)));
    for (const id of ['d1', 'd2']) {
      sim.setFault(id, { fault: { kind: 'hang' } });
      await instances[0]!.store.openCircuit(pool, id, LONG_MS);
    }
    const timeoutMs = 3 * INTERVAL_MS;
    const prefix = newPrefix();
    instances.map((g) => prober(config, g.store, prefix, timeoutMs));
    await until(
      () => probesAt(sim, 'd1').length >= 3 && probesAt(sim, 'd2').length >= 3,
      5000,
      'three runs probing the hanging deployments',
    );
    const [d1, d2] = ['d1', 'd2'].map((id) => probesAt(sim, id).map((r) => r.at));
    const spacing = `d1 at ${d1!.map((at) => at - d1![0]!).join(', ')} ms; d2 at ${d2!.map((at) => at - d1![0]!).join(', ')} ms`;
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(d1![i]! - d2![i]!) < timeoutMs / 2, `one run probes both at once: ${spacing}`);
    for (let i = 1; i < 3; i++) assert.ok(d1![i]! - d1![i - 1]! >= timeoutMs - 50, `runs one after the other: ${spacing}`);
  });
});
