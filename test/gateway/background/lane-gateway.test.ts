/**
 * The lane inside real gateway instances, driven by the unmodified openai SDK against the simulator
 * and the test Redis: a batch runs to completion with the right output; background lines never take a
 * deployment past (1 − reserve) while interactive requests still pass; Azure's 429 with a retry time
 * sends the line back for that long; two clients' batches interleave; a client's quota slows only its
 * own lines. Scaled windows (gateway.windowMs and the simulator's windowMs) keep each test short.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import OpenAI, { toFile } from 'openai';
import type { GatewayConfig } from '../../../shared/config/schema.ts';
import type { RecordedRequest, Simulator } from '../../../shared/simulator/index.ts';
import { simulator, sleep, uniquePool, until } from '../../helpers/fixtures.ts';
import { CLIENT_KEY, startGateway, testConfig, type RunningGateway } from '../../helpers/gateway.ts';

/** A 1.2 s "minute" for the simulator and the gateway alike: a window's budget frees in ~1.2 s. */
const WINDOW_MS = 1200;
const OTHER_KEY = 'other-client-key';

describe('the lane in real gateways, through the openai SDK', () => {
  let sim: Simulator;
  const running: RunningGateway[] = [];
  before(async () => {
    sim = await simulator(
      [
        { name: 'a', tpm: 1000, rpm: 600, completionTokens: 5 },
        { name: 'big', tpm: 100_000, rpm: 60_000, completionTokens: 5 },
      ],
      { windowMs: WINDOW_MS },
    );
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((g) => g.close()));
    sim.reset();
  });
  after(() => sim.close());

  /** One or more instances sharing a lane (one background prefix), over one pool of the given deployments. */
  async function gateways(
    deployments: { id: string; tpm?: number; rpm?: number }[],
    background: Partial<GatewayConfig['background']> = {},
    clients = [
      { name: 'team-a', apiKey: CLIENT_KEY },
      { name: 'team-b', apiKey: OTHER_KEY },
    ] as { name: string; apiKey: string; tpm?: number }[],
    instances = 1,
    gateway: Record<string, unknown> = {},
  ) {
    const pool = uniquePool();
    const base = testConfig({
      pools: { [pool]: { deployments: deployments.map((d) => ({ ...d, endpoint: sim.url })) } },
      gateway: { windowMs: WINDOW_MS, ...gateway },
      clients,
    });
    const config = { ...base, background: { ...base.background, lockMs: 2000, ...background } };
    const prefix = `test-lane-gw-${randomUUID().slice(0, 8)}:`;
    /** Another instance of the same config, sharing the lane. */
    const another = async () => {
      const g = await startGateway(config, { backgroundPrefix: prefix });
      running.push(g);
      return g;
    };
    const started = [];
    for (let i = 0; i < instances; i++) started.push(await another());
    return { pool, gateways: started, another };
  }

  const client = (url: string, apiKey = CLIENT_KEY) => new OpenAI({ baseURL: `${url}/openai/v1`, apiKey, maxRetries: 0, timeout: 10_000 });

  async function submit(openai: OpenAI, pool: string, lines: number, maxTokens = 100, tag = 'line') {
    const jsonl = Array.from({ length: lines }, (_, i) =>
      JSON.stringify({
        custom_id: `${tag}-${i}`,
        method: 'POST',
        url: '/v1/chat/completions',
        body: { model: pool, messages: [{ role: 'user', content: 'Hello!' }], max_tokens: maxTokens },
      }),
    ).join('\n');
    const file = await openai.files.create({ file: await toFile(Buffer.from(jsonl), `${tag}.jsonl`), purpose: 'batch' });
    return openai.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  }

  async function completed(openai: OpenAI, batchId: string, timeoutMs = 15_000) {
    let batch = await openai.batches.retrieve(batchId);
    await until(
      async () => {
        batch = await openai.batches.retrieve(batchId);
        return ['completed', 'failed', 'expired', 'cancelled'].includes(batch.status);
      },
      timeoutMs,
      `batch ${batchId} done`,
    );
    return batch;
  }

  async function outputOf(openai: OpenAI, fileId: string | null | undefined) {
    assert.ok(fileId, 'the batch has an output file');
    const text = await (await openai.files.content(fileId)).text();
    return text
      .split('\n')
      .filter(Boolean)
      .map(
        (line) =>
          JSON.parse(line) as { custom_id: string; response: { status_code: number; request_id: string; body: { choices: unknown[] } } },
      );
  }

  /** The background requests the simulator got for one batch, oldest first. */
  const linesOf = (deployment: string, batchId: string): RecordedRequest[] =>
    sim.recentRequests(deployment).filter((request) => request.clientRequestId?.startsWith(`${batchId}_`));
  const indexOf = (request: RecordedRequest) => Number(request.clientRequestId!.split('_')[2]);

  test('a batch runs to completion: every custom_id once in the output, request_counts right', async () => {
    const {
      pool,
      gateways: [g],
    } = await gateways([{ id: 'big', tpm: 100_000, rpm: 60_000 }]);
    const openai = client(g!.url);
    const created = await submit(openai, pool, 10, 20);
    const batch = await completed(openai, created.id);
    assert.equal(batch.status, 'completed');
    assert.deepEqual(batch.request_counts, { total: 10, completed: 10, failed: 0 });
    const output = await outputOf(openai, batch.output_file_id);
    assert.deepEqual(output.map((line) => line.custom_id).sort(), Array.from({ length: 10 }, (_, i) => `line-${i}`).sort());
    for (const line of output) {
      assert.equal(line.response.status_code, 200);
      assert.equal(line.response.body.choices.length, 1);
    }
    const seen = linesOf('big', batch.id);
    assert.equal(seen.length, 10, 'each line reached Azure once');
    const metrics = await (await fetch(`${g!.url}/metrics`)).text();
    assert.match(metrics, new RegExp(`spillway_background_lines_total\\{pool="${pool}",outcome="succeeded"\\} 10`));
    assert.match(metrics, new RegExp(`spillway_background_tokens_total\\{pool="${pool}",deployment="big",kind="completion"\\} 50`));
  });

  test('background lines stay under (1 − reserve) of the deployment while interactive requests still pass', async () => {
    const {
      pool,
      gateways: [g],
    } = await gateways([{ id: 'a', tpm: 1000, rpm: 600 }], { concurrency: 4 });
    const openai = client(g!.url);
    // 9 prompt + 100 max tokens = 109 each: 6 fit under 700 per window, so 12 lines need two windows or more.
    const created = await submit(openai, pool, 12, 100);
    const interactive: number[] = [];
    const done = completed(openai, created.id, 15_000);
    let finished = false;
    void done.finally(() => (finished = true));
    while (!finished) {
      const answer = await openai.chat.completions
        .create({ model: pool, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 100 })
        .then(
          () => 200,
          (error: { status?: number }) => error.status ?? 0,
        );
      interactive.push(answer);
      // At most two interactive requests (218 tokens) per window: within the 300 the reserve keeps.
      await sleep(WINDOW_MS * 0.7);
    }
    const batch = await done;
    assert.equal(batch.status, 'completed');
    assert.deepEqual(batch.request_counts, { total: 12, completed: 12, failed: 0 });
    assert.ok(interactive.length >= 2 && interactive.every((status) => status === 200), `interactive answers: ${interactive.join(', ')}`);
    assert.equal(sim.stats('a').throttled, 0, 'Azure never throttled');
    // In the simulator's own terms: never more than 6 background requests (654 tokens) in any window.
    const times = linesOf('a', batch.id).map((request) => request.at);
    assert.equal(times.length, 12);
    for (const start of times) {
      const inWindow = times.filter((at) => at >= start && at < start + WINDOW_MS).length;
      assert.ok(inWindow <= 6, `${inWindow} background requests within one window from ${start}`);
    }
  });

  test('Azure’s 429 with a retry time sends the line back for that long', async () => {
    const {
      pool,
      gateways: [g],
    } = await gateways([{ id: 'big', tpm: 100_000, rpm: 60_000 }], { concurrency: 1 });
    sim.setFault('big', { fault: { kind: 'status', status: 429, retryAfterMs: 1800 }, count: 1 });
    const openai = client(g!.url);
    const created = await submit(openai, pool, 3, 20);
    const batch = await completed(openai, created.id);
    assert.deepEqual(batch.request_counts, { total: 3, completed: 3, failed: 0 });
    const seen = linesOf('big', batch.id);
    assert.equal(seen.length, 4, 'the throttled line was sent again');
    const [throttled, again] = seen.filter((request) => indexOf(request) === indexOf(seen[0]!));
    assert.equal(throttled?.status, 429);
    assert.ok(again, 'the throttled line ran again');
    const waited = again.at - throttled.at;
    // Not the lane's own backoff (1 s): the time Azure named.
    assert.ok(waited >= 1780 && waited < 2800, `sent again after ${waited} ms (Azure asked for 1800)`);
  });

  test('two clients’ batches interleave instead of running one after the other', async () => {
    const {
      pool,
      gateways: [g],
    } = await gateways([{ id: 'big', tpm: 100_000, rpm: 60_000 }], { concurrency: 1, poolConcurrency: 1 });
    const first = client(g!.url);
    const second = client(g!.url, OTHER_KEY);
    const a = await submit(first, pool, 14, 20, 'a');
    await until(() => linesOf('big', a.id).length >= 1, 5000, 'the first batch started');
    const b = await submit(second, pool, 4, 20, 'b');
    await completed(first, a.id);
    await completed(second, b.id);
    const order = sim
      .recentRequests('big')
      .filter((request) => request.clientRequestId?.startsWith(a.id) || request.clientRequestId?.startsWith(b.id))
      .map((request) => (request.clientRequestId!.startsWith(a.id) ? 'a' : 'b'));
    // From the moment team-b's batch is queued, one line of each client in turn (start-time fair queuing).
    const positions = order.flatMap((who, position) => (who === 'b' ? [position] : []));
    assert.equal(positions.length, 4);
    assert.ok(
      positions.slice(1).every((position, i) => position - positions[i]! === 2),
      `team-b's lines alternate with team-a's: ${order.join('')}`,
    );
    assert.ok(positions[3]! < order.length - 1, `team-a still had lines waiting when team-b's ran: ${order.join('')}`);
  });

  test('a client’s quota slows only its own lines', async () => {
    const {
      pool,
      gateways: [g],
    } = await gateways([{ id: 'big', tpm: 100_000, rpm: 60_000 }], { concurrency: 4 }, [
      { name: 'team-a', apiKey: CLIENT_KEY, tpm: 250 },
      { name: 'team-b', apiKey: OTHER_KEY },
    ]);
    const limited = client(g!.url);
    const free = client(g!.url, OTHER_KEY);
    // team-a: 9 + 100 = 109 booked each (settled to 14 used): about two lines per 1.2 s window.
    const slow = await submit(limited, pool, 6, 100, 'slow');
    const fast = await submit(free, pool, 6, 100, 'fast');
    const fastDone = await completed(free, fast.id);
    const fastAt = Date.now();
    const slowDone = await completed(limited, slow.id);
    const slowAt = Date.now();
    assert.deepEqual(fastDone.request_counts, { total: 6, completed: 6, failed: 0 });
    assert.deepEqual(slowDone.request_counts, { total: 6, completed: 6, failed: 0 }, 'the quota delayed lines, none failed');
    assert.ok(slowAt - fastAt >= WINDOW_MS / 2, `the limited client finished ${slowAt - fastAt} ms after the other`);
    const metrics = await (await fetch(`${g!.url}/metrics`)).text();
    assert.match(metrics, new RegExp(`spillway_background_throttles_total\\{pool="${pool}",reason="client-quota"\\} [1-9]`));
  });

  test('shutdown: the workers take no new line from its start; lines running finish within the grace, once', async () => {
    const {
      pool,
      gateways: [g],
      another,
    } = await gateways([{ id: 'big', tpm: 100_000, rpm: 60_000 }], { concurrency: 2, poolConcurrency: 2 }, undefined, 1, {
      shutdownDelayMs: 1000,
    });
    sim.setFault('big', { fault: { kind: 'slow-first-byte', delayMs: 400 }, count: 2 });
    const openai = client(g!.url);
    const created = await submit(openai, pool, 3, 20);
    await until(() => sim.stats('big').inFlight === 2, 5000, 'two lines in flight, one waiting');
    const report = await g!.gateway.shutdown('test');
    assert.equal(report.cut, 0);
    // The two lines finished during the delay; the third was not taken although slots were free.
    assert.equal(linesOf('big', created.id).length, 2, 'no line started after the shutdown began');
    const other = await another();
    const batch = await completed(client(other.url), created.id, 5000);
    assert.deepEqual(batch.request_counts, { total: 3, completed: 3, failed: 0 });
    assert.equal(linesOf('big', created.id).length, 3, 'each line reached Azure once');
  });

  test('shutdown: lines still running when the grace ends are cut and run again on another instance, not counted as a try', async () => {
    const {
      pool,
      gateways: [g],
      another,
    } = await gateways([{ id: 'big', tpm: 100_000, rpm: 60_000 }], { concurrency: 2, lineAttempts: 1 }, undefined, 1, {
      shutdownGraceMs: 400,
    });
    sim.setFault('big', { fault: { kind: 'slow-first-byte', delayMs: 5000 }, count: 2 });
    const openai = client(g!.url);
    const created = await submit(openai, pool, 2, 20);
    await until(() => sim.stats('big').inFlight === 2, 5000, 'both lines in flight');
    const other = await another();
    const report = await g!.gateway.shutdown('test');
    assert.ok(report.durationMs < 3000, `the shutdown kept to its grace (${report.durationMs} ms)`);
    const batch = await completed(client(other.url), created.id, 8000);
    assert.deepEqual(batch.request_counts, { total: 2, completed: 2, failed: 0 }, 'cut lines were run again, not recorded as failed');
    assert.equal(linesOf('big', created.id).length, 4);
  });
});
