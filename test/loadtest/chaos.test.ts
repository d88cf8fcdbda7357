/**
 * The chaos run (loadtest/chaos/, `npm run loadtest -- --scenario chaos`): a few seconds of it
 * through the driver itself, with one gateway and no nginx (CI has none), a deployment fault and a
 * 1 s Redis freeze. It asserts the report's accounting, not the gateway's behaviour: every arrival
 * in exactly one window, each window's outcomes adding up to its arrivals, the simulator's counts
 * adding up to its total, the drift read. Whether clients saw failures is the gateway's business.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ProcessSet } from '../../shared/processes/process-set.ts';
import type { ArrivalRecord, OutcomeClass, RunResult } from '../../loadtest/lib/protocol.ts';
import { OUTCOME_CLASSES } from '../../loadtest/lib/protocol.ts';
import { attribute, windowOf, type ChaosReport } from '../../loadtest/chaos/report.ts';
import { planChaos, type ChaosRun, type EventRun } from '../../loadtest/chaos/schedule.ts';
import { loadScenario } from '../../loadtest/lib/scenario.ts';
import { REPO_ROOT } from '../../loadtest/lib/stack.ts';

/** The driver's run below takes about 15 s (stack start, 6 s of load, drain, leaseMs wait, stop). */
const DRIVER_TIMEOUT_MS = 25_000;

const miniScenario = {
  name: 'chaos-test',
  description: 'A few seconds of the chaos machinery for the test suite.',
  apiVersion: '2024-10-21',
  requests: [
    { name: 'chat', operation: 'chat/completions', pool: 'gpt-4o', weight: 1, stream: false, promptChars: 200, maxTokens: 20 },
    { name: 'chat-stream', operation: 'chat/completions', pool: 'gpt-4o', weight: 1, stream: true, promptChars: 200, maxTokens: 20 },
  ],
  load: { startRate: 12, stages: [{ duration: '6s', target: 12 }], preAllocatedVUs: 10, maxVUs: 100, requestTimeout: '5s' },
  thresholds: { okStatuses: [200], maxErrorRate: 1 },
  local: {
    gateways: 1,
    maxRequests: 1000,
    windowMs: 60000,
    latency: { ttftMs: 20, perTokenMs: 3 },
    completionTokens: 10,
    gateway: { leaseMs: 1000, upstreamTimeoutMs: 1000, streamIdleTimeoutMs: 1000 },
    pools: {
      'gpt-4o': {
        strategy: 'least-requests',
        deployments: [
          { id: 'a', tpm: 1000000 },
          { id: 'b', tpm: 1000000 },
        ],
      },
    },
  },
  chaos: {
    settle: '500ms',
    events: [
      {
        name: 'reset',
        kind: 'fault',
        deployment: 'a',
        fault: { kind: 'reset-mid-stream', afterChunks: 2 },
        start: '1s',
        duration: '1500ms',
      },
      { name: 'freeze', kind: 'redis-freeze', start: '3500ms', duration: '1s' },
    ],
  },
};

const sum = (values: number[]) => values.reduce((acc, v) => acc + v, 0);

describe('chaos report', () => {
  const event = (name: string, startedAt: number, windowEndAt: number): EventRun => ({
    name,
    action: { kind: 'redis-freeze' },
    planned: { startMs: 0, endMs: 0, windowEndMs: 0 },
    startedAt,
    endedAt: windowEndAt - 1,
    windowEndAt,
    statsAtStart: { at: startedAt, stats: { d: stats(10) } },
    statsAtWindowEnd: { at: windowEndAt, stats: { d: stats(15) } },
    notes: [],
    errors: [],
  });
  const stats = (received: number) => ({
    received,
    served: received,
    throttled: 0,
    failed: 0,
    aborted: 0,
    promptTokens: 0,
    completionTokens: 0,
    inFlight: 0,
    peakConcurrency: 0,
  });
  const run: ChaosRun = {
    t0: 0,
    statsAtStart: { at: 0, stats: { d: stats(0) } },
    events: [event('one', 10, 20), event('two', 30, 40)],
    skipped: [],
    completed: true,
  };
  const arrival = (at: number, latencyMs: number, outcome: OutcomeClass = 'ok'): ArrivalRecord => ({
    at,
    latencyMs,
    outcome,
    request: 'chat',
    status: 200,
  });

  test('an arrival belongs to the window it was sent in, or to the event that began while it was in flight', () => {
    assert.equal(windowOf(run, arrival(5, 1)), 0, 'sent and done in quiet time: baseline');
    assert.equal(windowOf(run, arrival(5, 6)), 1, 'in flight when "one" started');
    assert.equal(windowOf(run, arrival(10, 1)), 1, 'sent at the start');
    assert.equal(windowOf(run, arrival(19.9, 50)), 1, 'sent in "one", in flight when "two" started: still "one"');
    assert.equal(windowOf(run, arrival(20, 5)), 0, 'the window ends at the end of the settle time');
    assert.equal(windowOf(run, arrival(25, 10)), 2);
    assert.equal(windowOf(run, arrival(45, 1)), 0);
  });

  test('windows: outcomes per window, the simulator counts by difference, the baseline gets the rest', () => {
    const arrivals = [arrival(1, 1), arrival(12, 1, 'broken'), arrival(13, 1), arrival(31, 1, 'throttled'), arrival(50, 0, 'dropped')];
    const windows = attribute(run, arrivals, 60, { at: 60, stats: { d: stats(30) } });
    assert.deepEqual(
      windows.map((w) => [w.name, w.arrivals, w.failed]),
      [
        ['baseline', 2, 1],
        ['one', 2, 1],
        ['two', 1, 1],
      ],
    );
    assert.deepEqual(
      windows.map((w) => w.upstream?.d?.received),
      [20, 5, 5],
      'the events 5 each, the baseline the rest of 30',
    );
    assert.equal(Math.round(windows[0]!.seconds * 1000), 40, 'quiet time: 60 ms minus the two windows of 10 ms');
    assert.deepEqual(windows[1]!.failures, { '200 broken': 1 });
  });
});

describe('chaos schedule in a scenario file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'spillway-chaos-schema-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const load = (chaos: unknown) => {
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ ...miniScenario, chaos }));
    return () => loadScenario(file);
  };
  const freeze = (start: string, duration: string, name = 'freeze') => ({ name, kind: 'redis-freeze', start, duration });

  test('is checked: kinds, times, order and gaps, within the stages, deployments that exist', () => {
    assert.doesNotThrow(load(miniScenario.chaos));
    assert.throws(load({ settle: '1s', events: [{ ...freeze('1s', '1s'), kind: 'redis-reboot' }] }), /kind/);
    assert.throws(load({ settle: '1s', events: [{ name: 'x', kind: 'redis-kill', start: '1s' }] }), /either end or duration/);
    assert.throws(load({ settle: '1s', events: [freeze('1s', '1s', 'a'), freeze('2500ms', '1s', 'b')] }), /settle time/);
    assert.throws(load({ settle: '1s', events: [freeze('1s', '1s', 'a'), freeze('3s', '1s', 'a')] }), /two events are named 'a'/);
    assert.throws(load({ settle: '1s', events: [freeze('4s', '1500ms')] }), /after the load/);
    const fault = { name: 'f', kind: 'fault', deployment: 'c', fault: { kind: 'hang' }, start: '1s', duration: '1s' };
    assert.throws(load({ settle: '1s', events: [fault] }), /no deployment 'c'/);
    assert.throws(load({ settle: '1s', events: [{ ...fault, deployment: 'a', fault: { kind: 'melt' } }] }), /kind/);
  });

  test('scales with --duration like the stages', () => {
    const plan = planChaos(loadScenario(writeScenario(dir)), 0.5, 3000);
    assert.deepEqual(
      plan?.events.map((e) => [e.name, e.startMs, e.endMs, e.windowEndMs]),
      [
        ['reset', 500, 1250, 1500],
        ['freeze', 1750, 2250, 2500],
      ],
    );
  });
});

function writeScenario(dir: string): string {
  const file = join(dir, 'chaos-test.json');
  writeFileSync(file, JSON.stringify(miniScenario));
  return file;
}

describe('chaos run through the driver', { timeout: DRIVER_TIMEOUT_MS + 5000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'spillway-chaos-test-'));
  const processes = new ProcessSet();
  after(async () => {
    await processes.stopAll(2000);
    rmSync(dir, { recursive: true, force: true });
  });

  test('a short schedule: every arrival in exactly one window, and the counts add up', async () => {
    const scenarioFile = writeScenario(dir);
    const out = join(dir, 'out.json');
    const args = ['loadtest/driver.ts', '--scenario', scenarioFile, '--no-lb', '--no-doc', '--results-dir', dir, '--json', out];
    const driver = processes.spawn('driver', process.execPath, args, { cwd: REPO_ROOT });
    let output = '';
    driver.process.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    driver.process.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => driver.process.kill('SIGTERM'), DRIVER_TIMEOUT_MS);
      driver.process.once('exit', (exitCode) => {
        clearTimeout(timer);
        resolve(exitCode);
      });
    });
    // 0: every threshold and chaos check passed; 99: one failed (the gateway's business, not this test's).
    assert.ok(code === 0 || code === 99, `driver exited with ${code}:\n${output.slice(-3000)}`);
    const json = JSON.parse(readFileSync(out, 'utf8')) as {
      result: RunResult;
      upstream: { total: { received: number } };
      chaos: ChaosReport;
    };
    const { result, chaos } = json;
    assert.equal(result.arrivals, undefined, 'the raw arrivals stay out of the JSON');
    assert.match(output, /chaos: what the clients saw/);

    // Every arrival, sent or dropped, in exactly one window.
    const arrivals = result.sent + result.dropped;
    assert.ok(result.sent >= 60, `about 72 arrivals at 12/s for 6 s, got ${result.sent}`);
    assert.deepEqual(
      chaos.windows.map((w) => [w.name, w.kind]),
      [
        ['baseline', 'baseline'],
        ['reset', 'fault'],
        ['freeze', 'redis-freeze'],
      ],
    );
    assert.equal(chaos.arrivals.reported, arrivals);
    assert.equal(chaos.arrivals.attributed, arrivals);
    assert.equal(sum(chaos.windows.map((w) => w.arrivals)), arrivals);
    assert.equal(sum(Object.values(result.outcomes)), arrivals, "the generator's own outcome counts cover every arrival");
    for (const outcome of OUTCOME_CLASSES)
      assert.equal(
        sum(chaos.windows.map((w) => w.outcomes[outcome])),
        result.outcomes[outcome],
        `${outcome}: the windows add up to the run`,
      );
    for (const w of chaos.windows) {
      assert.equal(sum(Object.values(w.outcomes)), w.arrivals, `${w.name}: its outcomes add up to its arrivals`);
      assert.equal(w.failed, w.arrivals - w.outcomes.ok, `${w.name}: failed = arrivals − ok`);
      assert.equal(sum(Object.values(w.failures)), w.failed);
      assert.equal(sum(Object.values(w.failedAt)), w.failed);
      assert.ok(w.arrivals > 0, `${w.name} had arrivals`);
    }

    // The events ran in order, for about their planned length, and did not overlap.
    const [, reset, freeze] = chaos.windows;
    for (const w of [reset!, freeze!]) {
      assert.ok(w.fromS! >= 0 && w.fromS! < w.undoS! && w.undoS! <= w.toS!, `${w.name}: start ≤ undo ≤ end`);
      assert.deepEqual(w.errors, [], `${w.name}: its actions worked`);
    }
    assert.ok(reset!.undoS! - reset!.fromS! >= 1.4, 'the fault lasted its 1.5 s');
    assert.ok(freeze!.undoS! - freeze!.fromS! >= 0.9, 'the freeze lasted its 1 s');
    assert.ok(reset!.toS! <= freeze!.fromS!, 'the windows follow each other');
    assert.ok(chaos.scheduleCompleted);
    assert.deepEqual(chaos.skipped, []);

    // What the simulator received, per deployment per window, adds up to what it received in all.
    const received = (w: (typeof chaos.windows)[number]) => sum(Object.values(w.upstream ?? {}).map((c) => c.received));
    for (const w of chaos.windows)
      assert.deepEqual(Object.keys(w.upstream ?? {}).sort(), ['gpt-4o--a', 'gpt-4o--b'], `${w.name}: both deployments`);
    assert.equal(sum(chaos.windows.map(received)), json.upstream.total.received);
    assert.ok(reset!.upstream!['gpt-4o--a']!.failed >= 1, 'the faulted deployment cut at least one response during the fault');
    assert.ok(reset!.outcomes.broken >= 1, 'a response cut after its head counts as broken, not as served');

    // The drift was read, at the load's end and leaseMs later, in Redis and through the admin API.
    assert.equal(chaos.drift.leaseMs, 1000);
    for (const reading of [chaos.drift.atLoadEnd, chaos.drift.afterLeases]) {
      assert.deepEqual(Object.keys(reading.redis ?? {}).sort(), ['gpt-4o/a', 'gpt-4o/b'], 'Redis answered for both deployments');
      assert.deepEqual(Object.keys(reading.gateways), ['gateway-1']);
    }
    assert.ok(chaos.drift.afterLeases.at - chaos.drift.atLoadEnd.at >= 1000, 'the second reading came leaseMs later');
    assert.deepEqual(
      chaos.checks.map((c) => c.name),
      [
        'schedule ran to its end',
        'every arrival in exactly one window',
        'every chaos action worked',
        'in-flight drift 1 s (leaseMs) after the load',
      ],
    );
  });
});
