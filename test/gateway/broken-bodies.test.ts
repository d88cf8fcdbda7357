/**
 * Answers that start well and break off (a reset mid-body, a stall cut by streamIdleTimeoutMs) count
 * against the deployment like a 5xx: a deployment that keeps doing it leaves rotation for every
 * instance, a client that leaves mid-stream counts against nobody, and the pool's last deployment in
 * rotation is never ejected. Real gateways on the run's Redis in front of the simulator; what the
 * clients saw and what the simulator received are asserted, not only the gateways' counters.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import type { Simulator } from '../../shared/simulator/index.ts';
import type { DeploymentSnapshot, PoolLayout } from '../../shared/store/types.ts';
import { startGateway, testConfig, type DeploymentInput, type RunningGateway } from '../helpers/gateway.ts';
import { chat, simulator, uniquePool, until } from '../helpers/fixtures.ts';

const IDS = ['d1', 'd2', 'd3'];
/** Failures in a row that eject; the breaker keeps its defaults (5 calls, 50 %). */
const CONSECUTIVE = 3;
/** Longer than any test here: an ejected deployment stays out for the rest of its test. */
const EJECTION_MS = 20_000;

interface Seen {
  status: number;
  deployment: string | null;
  /** The client read the whole answer (a stream up to [DONE], a JSON body that parses). */
  whole: boolean;
}

describe('answers that break off mid-body', () => {
  let sim: Simulator;
  const running: RunningGateway[] = [];
  before(async () => {
    sim = await simulator([...IDS, { name: 'slow', latency: { ttftMs: 10, perTokenMs: 40 } }]);
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((g) => g.close()));
    sim.reset();
  });
  after(() => sim.close());

  async function gateways(count: number, deployments: DeploymentInput[], strategy = 'round-robin') {
    const pool = uniquePool();
    const config = testConfig({
      pools: { [pool]: { strategy, deployments } },
      gateway: { streamIdleTimeoutMs: 300, outlier: { consecutiveFailures: CONSECUTIVE, baseEjectionMs: EJECTION_MS } },
    });
    const started = await Promise.all(Array.from({ length: count }, () => startGateway(config)));
    running.push(...started);
    const layout: PoolLayout = {
      name: pool,
      strategy: 'round-robin',
      deployments: deployments.map((d) => ({ id: d.id, priority: 1, weight: 1 })),
    };
    const snapshot = async () =>
      Object.fromEntries((await started[0]!.store.snapshot(layout)).map((d) => [d.id, d])) as Record<string, DeploymentSnapshot>;
    return { pool, gateways: started, snapshot };
  }
  const all = (ids = IDS) => ids.map((id) => ({ id, endpoint: sim.url }));

  /** `total` requests, `concurrency` at a time, spread over `targets` in turn; what each client saw. */
  async function load(targets: RunningGateway[], pool: string, total: number, stream: boolean, concurrency = 3): Promise<Seen[]> {
    const seen: Seen[] = [];
    let next = 0;
    const worker = async () => {
      while (next < total) {
        const target = targets[next++ % targets.length]!;
        const response = await chat(target.url, pool, { stream });
        const text = await response.text().catch(() => undefined);
        const whole = text !== undefined && (stream ? text.endsWith('data: [DONE]\n\n') : isJson(text));
        seen.push({ status: response.status, deployment: response.headers.get('x-gateway-deployment'), whole });
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return seen;
  }

  const count = (seen: Seen[], where: (s: Seen) => boolean) => seen.filter(where).length;
  const received = (ids = IDS) => Object.fromEntries(ids.map((id) => [id, sim.stats(id).received]));

  /** The sum of a metric's samples on every gateway whose labels include `labels`. */
  async function metric(targets: RunningGateway[], name: string, labels: Record<string, string>): Promise<number> {
    let sum = 0;
    for (const g of targets) {
      const text = await (await fetch(`${g.url}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
      for (const line of text.split('\n')) {
        if (!line.startsWith(`${name}{`)) continue;
        if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.split(' ').at(-1));
      }
    }
    return sum;
  }

  for (const stream of [true, false]) {
    const kind = stream ? 'streaming' : 'non-streaming (cut despite its content-length)';
    test(`${kind}: a deployment resetting every answer leaves rotation on both instances`, async () => {
      const {
        pool,
        gateways: [a, b],
        snapshot,
      } = await gateways(2, all());
      sim.setFault('d1', { fault: { kind: 'reset-mid-stream', afterChunks: 3 } });
      const total = 90;
      const seen = await load([a!, b!], pool, total, stream);
      const broken = received().d1!;
      // Each instance counts its own run: at most CONSECUTIVE failures each before one of them ejects d1
      // for both, plus the requests already on their way to d1 then (at most the 3 in flight).
      const bound = 2 * CONSECUTIVE + 3;
      assert.ok(broken >= CONSECUTIVE && broken <= bound, `d1 received ${broken} of ${total} (bound ${bound})`);
      assert.equal(received().d2! + received().d3!, total - broken, 'd2 and d3 served the rest; no request was retried');
      assert.ok(
        seen.every((s) => s.status === 200),
        'an answer that started is the client’s: no failover after the first byte',
      );
      assert.equal(
        count(seen, (s) => !s.whole),
        broken,
        'the clients saw exactly d1’s answers cut',
      );
      assert.equal(
        count(seen, (s) => s.deployment === 'd1' && s.whole),
        0,
      );
      assert.equal((await snapshot()).d1?.circuit, 'open', 'd1 is out for every instance');

      // b stops sending there too, whichever instance ejected it.
      sim.resetStats();
      const later = await load([b!], pool, 30, stream);
      assert.deepEqual(received(), { d1: 0, d2: 15, d3: 15 });
      assert.ok(later.every((s) => s.whole));

      // Not a plain 200 in the metrics: the request's outcome and the attempt's say so.
      assert.equal(await metric([a!, b!], 'spillway_requests_total', { pool, status: '200', outcome: 'upstream-broke' }), broken);
      assert.equal(await metric([a!, b!], 'spillway_requests_total', { pool, status: '200', outcome: 'ok' }), total + 30 - broken);
      assert.equal(await metric([a!, b!], 'spillway_upstream_attempts_total', { deployment: 'd1', outcome: 'upstream-broke' }), broken);
      assert.equal(await metric([a!, b!], 'spillway_upstream_attempts_total', { deployment: 'd1', outcome: '200' }), 0);
    });
  }

  test('a stall cut by streamIdleTimeoutMs counts the same', async () => {
    const {
      pool,
      gateways: [g],
      snapshot,
    } = await gateways(1, all());
    sim.setFault('d1', { fault: { kind: 'stall-mid-stream', afterChunks: 2 } });
    const seen = await load([g!], pool, 24, true, 2);
    const stalled = received().d1!;
    // One instance: its run of CONSECUTIVE, plus the one other request in flight.
    assert.ok(stalled >= CONSECUTIVE && stalled <= CONSECUTIVE + 1, `d1 received ${stalled} of 24`);
    assert.equal(
      count(seen, (s) => !s.whole),
      stalled,
      'the stalled answers were cut for the client',
    );
    await until(() => sim.stats('d1').aborted === stalled, 2000, 'the gateway to close each stalled upstream request');
    assert.equal((await snapshot()).d1?.circuit, 'open');
    assert.equal(await metric([g!], 'spillway_upstream_attempts_total', { deployment: 'd1', outcome: 'upstream-broke' }), stalled);
  });

  test('a client that leaves mid-stream counts against nobody: it neither fails nor ends a run of failures', async () => {
    // 'slow' is the only first-tier deployment, so every request goes there; a stream of 20 tokens takes ~800 ms.
    const deployments = [{ id: 'slow', endpoint: sim.url }, ...IDS.map((id) => ({ id, endpoint: sim.url, priority: 2 }))];
    const {
      pool,
      gateways: [g],
      snapshot,
    } = await gateways(1, deployments, 'least-requests');
    const settled = () => until(async () => (await snapshot()).slow?.inFlight === 0, 3000, 'the attempt to be over');
    const leave = async () => {
      const controller = new AbortController();
      const response = await chat(g!.url, pool, { stream: true, body: { max_tokens: 20 }, signal: controller.signal });
      assert.equal(response.headers.get('x-gateway-deployment'), 'slow');
      await response.body!.getReader().read();
      controller.abort();
      await settled();
    };
    const breakOff = async () => {
      sim.setFault('slow', { fault: { kind: 'reset-mid-stream', afterChunks: 2 }, count: 1 });
      const response = await chat(g!.url, pool, { stream: true, body: { max_tokens: 20 } });
      assert.equal(response.headers.get('x-gateway-deployment'), 'slow');
      assert.equal(await response.text().catch(() => 'cut'), 'cut', 'the client saw the stream cut');
      await settled();
    };
    // Clients leaving often enough to eject it many times over, between the failures of one run.
    for (const step of [leave, leave, breakOff, leave, leave, breakOff, leave, leave]) await step();
    assert.equal((await snapshot()).slow?.circuit, 'closed', 'two failures in the run, whatever the clients did');
    assert.equal(sim.stats('slow').aborted, 6, 'the simulator saw the six clients leave');
    await breakOff();
    await until(async () => (await snapshot()).slow?.circuit === 'open', 2000, 'the third failure of the run to eject it');
    const response = await chat(g!.url, pool, { stream: true });
    assert.notEqual(response.headers.get('x-gateway-deployment'), 'slow', 'the second tier takes over');
    assert.ok((await response.text()).endsWith('data: [DONE]\n\n'));
  });

  test('when every deployment breaks off, the last in rotation is never ejected: they keep being tried, clients see the errors', async () => {
    const { pool, gateways: targets, snapshot } = await gateways(2, all());
    for (const id of IDS) sim.setFault(id, { fault: { kind: 'reset-mid-stream', afterChunks: 3 } });
    const total = 60;
    const seen = await load(targets, pool, total, true);
    assert.ok(
      seen.every((s) => s.status === 200 && !s.whole),
      `every client got a deployment’s answer, cut: no 429 from a gateway that ejected the whole pool (${JSON.stringify(seen.filter((s) => s.status !== 200 || s.whole))})`,
    );
    const reached = Object.values(received()).reduce((sum, n) => sum + n, 0);
    assert.equal(reached, total, 'every request reached a deployment');
    const circuits = Object.values(await snapshot()).map((d) => d.circuit);
    assert.equal(circuits.filter((c) => c === 'closed').length, 1, `one deployment stays in rotation (${circuits.join(', ')})`);
    // And it keeps being tried: the last requests still reach the simulator, not a refusal.
    sim.resetStats();
    const more = await load(targets, pool, 12, true);
    assert.ok(more.every((s) => s.status === 200));
    assert.equal(
      Object.values(received()).reduce((sum, n) => sum + n, 0),
      12,
    );
  });
});

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}
