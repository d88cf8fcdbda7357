/**
 * The lane on its own: real BullMQ on the test Redis, the stand-in records and a stand-in listener
 * whose answers each test scripts (lane-stand-in.ts), so each way a line's answer can go is seen apart:
 * recorded, the pool's lane paused, one line delayed, a try counted, the shutdown's cut, cancel,
 * expiry, fair order. test/gateway/background/lane-gateway.test.ts runs it inside real gateways.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';
import { Lane } from '../../../gateway/background/lane.ts';
import { FairOrder, MAX_PRIORITY, priorityOf } from '../../../gateway/background/lane/fair-order.ts';
import { Metrics } from '../../../gateway/metrics.ts';
import { configSchema, type BackgroundSettings } from '../../../shared/config/schema.ts';
import { quietLogger } from '../../helpers/collaborators.ts';
import { sleep, uniquePool, until } from '../../helpers/fixtures.ts';
import { StandInListener, StandInRecords, type Received, type Reply } from './lane-stand-in.ts';

const REDIS_URL = process.env.REDIS_URL!;
const LANE_SECRET = 'lane-test-secret';

describe('background lane', () => {
  const prefix = `test-lane-${randomUUID().slice(0, 8)}:`;
  let records: StandInRecords;
  let listener: StandInListener;
  const lanes: { lane: Lane; connection: Redis }[] = [];

  before(async () => {
    assert.ok(REDIS_URL, 'run with --test-global-setup=test/global-setup.ts');
    records = new StandInRecords(REDIS_URL, prefix);
    listener = new StandInListener();
    await listener.listen();
  });
  afterEach(async () => {
    await Promise.all(lanes.splice(0).map(({ lane, connection }) => lane.close(0).then(() => connection.quit())));
    listener.reply = () => ({ status: 200 });
  });
  after(async () => {
    await records.close();
    await listener.close();
  });

  /** A started lane (one "instance") over the given pools, with background settings of its own. */
  async function lane(pools: string[], settings: Partial<BackgroundSettings> = {}, metrics = new Metrics(false), sweepEveryMs = 200) {
    const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
    const background = configSchema.parse({
      pools: { p: { deployments: [{ id: 'd', endpoint: 'http://127.0.0.1:9', deployment: 'd', apiKey: 'k' }] } },
    }).background;
    const running = new Lane({
      connection,
      prefix: `${prefix}{lane}`,
      records,
      settings: { ...background, lockMs: 1000, ...settings },
      pools: () => pools,
      laneHeaders: (client) => ({ 'x-spillway-lane': LANE_SECRET, 'x-spillway-client': client }),
      lineTimeoutMs: 5000,
      metrics,
      logger: quietLogger(),
      sweepEveryMs,
    });
    lanes.push({ lane: running, connection });
    await running.start(listener.url);
    return running;
  }

  const finished = (batchId: string, timeoutMs = 8000) =>
    until(
      async () => ['completed', 'cancelled'].includes((await records.info(batchId))?.status ?? ''),
      timeoutMs,
      `batch ${batchId} finished`,
    );
  const lineOf = (request: Received) => Number(request.requestId.split('_')[2]);

  test('a batch runs: every line once, as a marked request of its client, recorded with its answer', async () => {
    const pool = uniquePool();
    const running = await lane([pool]);
    const batch = await records.create({ client: 'team-a', pool, total: 12 });
    await running.submit(batch);
    await finished(batch.id);
    const results = await records.results(batch.id);
    assert.deepEqual(
      results.map((r) => r.index),
      [...Array(12).keys()],
    );
    for (const result of results) {
      assert.equal(result.outcome?.kind, 'response');
      assert.equal(result.outcome.kind === 'response' && result.outcome.statusCode, 200);
    }
    const sent = listener.of(batch.id);
    assert.equal(sent.length, 12, 'one request per line');
    for (const request of sent) {
      assert.equal(request.path, '/openai/v1/chat/completions');
      assert.equal(request.headers['x-spillway-lane'], LANE_SECRET);
      assert.equal(request.headers['x-spillway-client'], 'team-a');
      assert.match(request.requestId, new RegExp(`^${batch.id}_\\d+_\\d+$`));
      assert.equal(request.body.model, pool);
    }
    assert.equal((await records.info(batch.id))?.status, 'completed');
  });

  test('an instance without workers takes the submit; an instance with workers runs the lines', async () => {
    const pool = uniquePool();
    const front = await lane([pool], { workers: false });
    const batch = await records.create({ client: 'team-a', pool, total: 3 });
    await front.submit(batch);
    await sleep(400);
    assert.equal(listener.of(batch.id).length, 0, 'no worker, no line run');
    await lane([pool]);
    await finished(batch.id);
    assert.equal(listener.of(batch.id).length, 3);
  });

  test('a pool without room pauses its lane for the time the gateway named, and the line is not counted as a try', async () => {
    const pool = uniquePool();
    let refusals = 1;
    listener.reply = () =>
      refusals-- > 0 ? { status: 429, headers: { 'retry-after-ms': '2000', 'x-spillway-throttle': 'pool-full' } } : { status: 200 };
    const metrics = new Metrics(false);
    // One try only: a pause counted as a try would record the 429.
    const running = await lane([pool], { lineAttempts: 1, concurrency: 1 }, metrics);
    const batch = await records.create({ client: 'team-a', pool, total: 3 });
    await running.submit(batch);
    await finished(batch.id);
    const sent = listener.of(batch.id);
    assert.equal(sent.length, 4, 'the refused line ran again');
    // The whole pool waited: nothing was sent in the 2 s after the refusal (a line sent back alone
    // would be taken again within BullMQ's drainDelay, 1 s).
    const gap = sent[1]!.at - sent[0]!.at;
    assert.ok(gap >= 1950 && gap < 3500, `the pool's lane waited ${gap} ms`);
    for (const result of await records.results(batch.id))
      assert.equal(result.outcome?.kind === 'response' && result.outcome.statusCode, 200);
    const throttles = await metrics.registry.getSingleMetricAsString('spillway_background_throttles_total');
    assert.match(throttles, /reason="pool-full"} 1/);
  });

  test('a client at its quota delays only that line; other clients’ lines go on', async () => {
    const pool = uniquePool();
    let refused = false;
    listener.reply = (request) => {
      if (request.headers['x-spillway-client'] === 'slow' && !refused) {
        refused = true;
        return { status: 429, headers: { 'retry-after-ms': '800', 'x-spillway-throttle': 'client-quota' } };
      }
      return { status: 200, delayMs: 50 };
    };
    const running = await lane([pool], { lineAttempts: 1, concurrency: 1 });
    const slow = await records.create({ client: 'slow', pool, total: 1 });
    const other = await records.create({ client: 'other', pool, total: 4 });
    await running.submit(slow);
    await sleep(100);
    await running.submit(other);
    await finished(other.id);
    await finished(slow.id);
    const [first, second] = listener.of(slow.id);
    assert.ok(first && second, 'the slow client’s line ran twice');
    assert.ok(second.at - first.at >= 750, `the line waited ${second.at - first.at} ms`);
    const others = listener.of(other.id);
    assert.ok(
      others.every((request) => request.at < second.at),
      'the other client’s lines ran while that line waited',
    );
    const [result] = await records.results(slow.id);
    assert.equal(result?.outcome?.kind === 'response' && result.outcome.statusCode, 200, 'the wait was not counted as a try');
  });

  test('Azure’s 429 passed on is waited out for the time it named, not counted; 5xx answers are tried again after theirs, counted against lineAttempts', async () => {
    const pool = uniquePool();
    let throttles = 0;
    listener.reply = (request): Reply =>
      lineOf(request) !== 0
        ? { status: 503, headers: { 'retry-after-ms': '300' }, body: { error: { code: 'ServiceUnavailable', message: 'down' } } }
        : ++throttles <= 3
          ? { status: 429, headers: { 'retry-after-ms': '400', 'x-gateway-attempts': '1', 'x-spillway-throttle': 'pool-unavailable' } }
          : { status: 200 };
    const metrics = new Metrics(false);
    const running = await lane([pool], { lineAttempts: 3, concurrency: 2 }, metrics);
    const batch = await records.create({ client: 'team-a', pool, total: 2 });
    await running.submit(batch);
    await finished(batch.id);
    for (const index of [0, 1]) {
      const sent = listener.of(batch.id).filter((request) => lineOf(request) === index);
      // Line 0: three 429s (more than lineAttempts - 1) and then its answer; line 1: lineAttempts tries.
      assert.equal(sent.length, index === 0 ? 4 : 3, `line ${index}: tried ${index === 0 ? 'until answered' : 'lineAttempts times'}`);
      const wait = index === 0 ? 400 : 300;
      for (let i = 1; i < sent.length; i++) {
        const gap = sent[i]!.at - sent[i - 1]!.at;
        assert.ok(gap >= wait - 20 && gap < wait + 700, `line ${index}: waited ${gap} ms, as asked (${wait} ms)`);
      }
    }
    const [throttled, failed] = await records.results(batch.id);
    assert.equal(
      throttled?.outcome?.kind === 'response' && throttled.outcome.statusCode,
      200,
      'the throttled line was not failed for its 429s',
    );
    assert.equal(failed?.outcome?.kind === 'response' && failed.outcome.statusCode, 503);
    assert.deepEqual(failed?.outcome?.kind === 'response' && failed.outcome.body, {
      error: { code: 'ServiceUnavailable', message: 'down' },
    });
    assert.match(await metrics.registry.getSingleMetricAsString('spillway_background_throttles_total'), /reason="upstream"} 3/);
    assert.match(await metrics.registry.getSingleMetricAsString('spillway_background_lines_total'), /outcome="failed"} 1/);
  });

  test('a line without an answer is tried again after a bounded backoff; its error is the result once tries run out', async () => {
    const pool = uniquePool();
    listener.reply = () => 'reset';
    const running = await lane([pool], { lineAttempts: 2 });
    const batch = await records.create({ client: 'team-a', pool, total: 1 });
    await running.submit(batch);
    await finished(batch.id);
    const sent = listener.of(batch.id);
    assert.equal(sent.length, 2);
    const gap = sent[1]!.at - sent[0]!.at;
    assert.ok(gap >= 950 && gap < 2500, `backed off ${gap} ms (1 s after the first failure)`);
    const [result] = await records.results(batch.id);
    assert.equal(result?.outcome?.kind, 'error');
    assert.equal(result.outcome.kind === 'error' && result.outcome.code, 'request_failed');
  });

  test('two clients’ batches interleave line by line from the moment the second arrives (start-time fair queuing)', async () => {
    const pool = uniquePool();
    listener.reply = () => ({ status: 200, delayMs: 30 });
    const running = await lane([pool], { concurrency: 1, poolConcurrency: 1 });
    const big = await records.create({ client: 'big', pool, total: 16 });
    await running.submit(big);
    await until(() => listener.of(big.id).length >= 2, 5000, 'the first batch started');
    const small = await records.create({ client: 'small', pool, total: 4 });
    await running.submit(small);
    await finished(big.id);
    await finished(small.id);
    const order = listener.received.filter((r) => r.requestId.startsWith(big.id) || r.requestId.startsWith(small.id));
    const positions = order.flatMap((request, position) => (request.requestId.startsWith(small.id) ? [position] : []));
    assert.equal(positions.length, 4);
    // Arrived while ~14 lines of the other client waited: its 4 lines run within the next 10 or so, one in two.
    assert.ok(
      positions[3]! <= 12,
      `the later client's lines ran at ${positions.join(', ')} of ${order.length}, not behind the first batch`,
    );
    const gaps = positions.slice(1).map((p, i) => p - positions[i]!);
    assert.ok(
      gaps.every((gap) => gap === 2),
      `one line of each client in turn: positions ${positions.join(', ')}`,
    );
  });

  test('a client’s second batch queues behind its first, not beside it', async () => {
    const pool = uniquePool();
    listener.reply = () => ({ status: 200, delayMs: 20 });
    const running = await lane([pool], { concurrency: 1, poolConcurrency: 1 });
    const first = await records.create({ client: 'team-a', pool, total: 6 });
    const second = await records.create({ client: 'team-a', pool, total: 3 });
    await running.submit(first);
    await until(() => listener.of(first.id).length >= 1, 5000, 'the first batch started');
    await running.submit(second);
    await finished(second.id);
    const order = listener.received.filter((r) => r.requestId.startsWith(first.id) || r.requestId.startsWith(second.id));
    assert.deepEqual(
      order.map((r) => (r.requestId.startsWith(first.id) ? 'first' : 'second')),
      [...Array(6).fill('first'), ...Array(3).fill('second')],
    );
  });

  test('cancel: lines not started are skipped as cancelled, the line running finishes and keeps its result', async () => {
    const pool = uniquePool();
    listener.reply = () => ({ status: 200, delayMs: 200 });
    const running = await lane([pool], { concurrency: 1 });
    const batch = await records.create({ client: 'team-a', pool, total: 10 });
    await running.submit(batch);
    await until(() => listener.of(batch.id).length >= 2, 5000, 'two lines sent');
    await records.setStatus(batch.id, 'cancelling');
    await running.cancel(batch.id);
    await finished(batch.id);
    assert.equal((await records.info(batch.id))?.status, 'cancelled');
    const results = await records.results(batch.id);
    assert.equal(results.length, 10, 'every line settled');
    const answered = results.filter((r) => r.outcome);
    const cancelled = results.filter((r) => r.skipped === 'cancelled');
    assert.ok(answered.length >= 2 && answered.length <= 3, `${answered.length} lines ran (those started before the cancel)`);
    assert.equal(answered.length + cancelled.length, 10);
    assert.equal(listener.of(batch.id).length, answered.length, 'no cancelled line was sent');
  });

  test('cancel takes the waiting lines out of the queue at once, though their pool is paused', async () => {
    const pool = uniquePool();
    listener.reply = () => ({ status: 429, headers: { 'retry-after-ms': '20000', 'x-spillway-throttle': 'pool-full' } });
    const running = await lane([pool], { concurrency: 1 }, new Metrics(false), 60_000);
    const batch = await records.create({ client: 'team-a', pool, total: 6 });
    await running.submit(batch);
    await until(() => listener.of(batch.id).length === 1, 5000, 'the pool paused');
    await records.setStatus(batch.id, 'cancelling');
    const cancelled = Date.now();
    await running.cancel(batch.id);
    await finished(batch.id, 5000);
    assert.ok(Date.now() - cancelled < 2000, 'cancelled without waiting for the pool');
    assert.deepEqual(
      (await records.results(batch.id)).map((r) => r.skipped),
      Array(6).fill('cancelled'),
    );
  });

  test('lines reached past the completion window are skipped as expired', async () => {
    const pool = uniquePool();
    listener.reply = () => ({ status: 200, delayMs: 400 });
    const running = await lane([pool], { concurrency: 1 }, new Metrics(false), 60_000);
    const batch = await records.create({ client: 'team-a', pool, total: 4, expiresAt: Date.now() + 250 });
    await running.submit(batch);
    await finished(batch.id);
    const results = await records.results(batch.id);
    assert.equal(results[0]?.outcome?.kind, 'response', 'the line started in time ran');
    assert.deepEqual(
      results.slice(1).map((r) => r.skipped),
      ['expired', 'expired', 'expired'],
    );
    assert.equal(listener.of(batch.id).length, 1);
  });

  test('the cluster-wide sweep expires lines that wait past the window in a paused pool', async () => {
    const pool = uniquePool();
    listener.reply = () => ({ status: 429, headers: { 'retry-after-ms': '20000', 'x-spillway-throttle': 'pool-full' } });
    const metrics = new Metrics(false);
    const running = await lane([pool], { concurrency: 1 }, metrics, 200);
    const batch = await records.create({ client: 'team-a', pool, total: 5, expiresAt: Date.now() + 500 });
    await running.submit(batch);
    const started = Date.now();
    await finished(batch.id, 5000);
    assert.ok(Date.now() - started < 3000, 'expired by the sweep, not after the pool’s 20 s pause');
    const results = await records.results(batch.id);
    assert.deepEqual(
      results.map((r) => r.skipped),
      Array(5).fill('expired'),
    );
    assert.equal(listener.of(batch.id).length, 1, 'only the first line was tried (the pool paused)');
    assert.match(await metrics.registry.getSingleMetricAsString('spillway_background_lines_total'), /outcome="expired"} 5/);
  });

  test('a submit run again while the batch runs (a crash mid-submit) adds no line twice', async () => {
    const pool = uniquePool();
    listener.reply = () => ({ status: 200, delayMs: 100 });
    const running = await lane([pool], { concurrency: 1 });
    const batch = await records.create({ client: 'team-a', pool, total: 8 });
    await Promise.all([running.submit(batch), running.submit(batch)]);
    // Some lines done (their jobs gone), some waiting: the second run meets both.
    await until(() => listener.of(batch.id).length >= 3, 5000, 'three lines sent');
    await running.submit(batch);
    await finished(batch.id);
    await sleep(300);
    const lines = listener.of(batch.id).map(lineOf);
    assert.deepEqual(
      lines.sort((a, b) => a - b),
      [...Array(8).keys()],
      'each line sent once',
    );
  });

  test('a submit run again adds no job twice (deterministic job ids)', async () => {
    const pool = uniquePool();
    listener.reply = () => ({ status: 429, headers: { 'retry-after-ms': '20000', 'x-spillway-throttle': 'pool-full' } });
    const metrics = new Metrics(false);
    const running = await lane([pool], { concurrency: 1 }, metrics, 60_000);
    const batch = await records.create({ client: 'team-a', pool, total: 8 });
    await running.submit(batch);
    await until(() => listener.of(batch.id).length === 1, 5000, 'the pool paused');
    await running.submit(batch);
    await sleep(300);
    const depth = await metrics.registry.getSingleMetricAsString('spillway_background_queue_lines');
    assert.match(depth, new RegExp(`\\{pool="${pool}",state="waiting"\\} 8\\n`), 'eight lines queued, not sixteen');
  });

  test('shutdown: lines cut at the end of the grace go back to the queue uncounted, and another instance runs them', async () => {
    const pool = uniquePool();
    listener.reply = () => ({ status: 200, delayMs: 10_000 });
    const first = await lane([pool], { concurrency: 2, lineAttempts: 1 });
    const batch = await records.create({ client: 'team-a', pool, total: 2 });
    await first.submit(batch);
    await until(() => listener.of(batch.id).length === 2, 5000, 'both lines in flight');
    const closing = Date.now();
    await first.close(300);
    assert.ok(Date.now() - closing < 2000, 'the close kept to its grace');
    listener.reply = () => ({ status: 200 });
    await lane([pool], { concurrency: 2, lineAttempts: 1 });
    await finished(batch.id, 5000);
    for (const result of await records.results(batch.id))
      assert.equal(result.outcome?.kind === 'response' && result.outcome.statusCode, 200);
    assert.equal(listener.of(batch.id).length, 4, 'each line sent again, once');
  });

  test('the queue depth per pool and state is read from BullMQ at scrape', async () => {
    const pool = uniquePool();
    listener.reply = () => ({ status: 429, headers: { 'retry-after-ms': '20000', 'x-spillway-throttle': 'pool-full' } });
    const metrics = new Metrics(false);
    const running = await lane([pool], { concurrency: 1 }, metrics, 60_000);
    const batch = await records.create({ client: 'team-a', pool, total: 5 });
    await running.submit(batch);
    await until(() => listener.of(batch.id).length === 1, 5000, 'the pool paused');
    await sleep(100);
    const text = await metrics.registry.getSingleMetricAsString('spillway_background_queue_lines');
    assert.match(text, new RegExp(`spillway_background_queue_lines\\{pool="${pool}",state="waiting"\\} 5`));
    assert.match(text, new RegExp(`spillway_background_queue_lines\\{pool="${pool}",state="active"\\} 0`));
  });

  test('fair tags: from the head of the queue or the client’s last tag, a new round when nothing waits, the top of BullMQ’s range at most', async () => {
    const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
    const queue = new Queue(`tags-${randomUUID().slice(0, 8)}`, { connection, prefix: `${prefix}{lane}` });
    try {
      const order = new FairOrder(connection, `${prefix}{lane}`);
      const pool = uniquePool();
      assert.equal(await order.reserve(queue, pool, 'a', 10), 1, 'an empty queue starts a round at 1');
      await queue.addBulk(Array.from({ length: 10 }, (_, i) => ({ name: 'line', data: {}, opts: { priority: 1 + i } })));
      assert.equal(await order.reserve(queue, pool, 'b', 4), 1, 'another client starts at the head (virtual time 1)');
      assert.equal(await order.reserve(queue, pool, 'a', 5), 11, 'a client’s next batch after its last');
      await queue.drain();
      assert.equal(await order.reserve(queue, pool, 'a', 5), 1, 'nothing waits: a new round, every tag forgotten');
      assert.equal(priorityOf(0), 1);
      assert.equal(priorityOf(MAX_PRIORITY + 1000), MAX_PRIORITY);
    } finally {
      await queue.obliterate({ force: true });
      await queue.close();
      await connection.quit();
    }
  });
});
