/**
 * Durability of the Batch API with real processes: two gateway processes share Redis and the lane;
 * one is killed with SIGKILL while it has lines in flight; the other finishes the batch. Every
 * custom_id is in the output exactly once and request_counts are right, though Azure may have seen a
 * line twice (the killed instance's request, then the one that ran it again).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI, { toFile } from 'openai';
import type { Simulator } from '../../shared/simulator/index.ts';
import { simulator, uniquePool, until } from '../helpers/fixtures.ts';
import { CLIENT_KEY, spawnGateway, testConfig, type GatewayProcess } from '../helpers/gateway.ts';

const LINES = 40;

describe('batch durability', () => {
  let sim: Simulator;
  const processes: GatewayProcess[] = [];
  before(async () => {
    // Each line takes about half a second at Azure.
    sim = await simulator([{ name: 'd', completionTokens: 5, latency: { ttftMs: 500, perTokenMs: 0 } }]);
  });
  after(async () => {
    await Promise.all(processes.map((p) => p.stop('SIGKILL')));
    await sim.close();
  });

  test('kill -9 of an instance running lines: the other finishes the batch, each custom_id once', { timeout: 25_000 }, async () => {
    const pool = uniquePool();
    const base = testConfig({ pools: { [pool]: { deployments: [{ id: 'd', endpoint: sim.url }] } } });
    // Locks of 1 s: a dead instance's lines are back in the queue about 2 s after it died.
    const config = { ...base, background: { ...base.background, lockMs: 1000, concurrency: 4 } };
    const [doomed, survivor] = [await spawnGateway(config), await spawnGateway(config)];
    processes.push(doomed!, survivor!);

    const openai = new OpenAI({ baseURL: `${survivor!.url}/openai/v1`, apiKey: CLIENT_KEY, maxRetries: 0, timeout: 10_000 });
    const jsonl = Array.from({ length: LINES }, (_, i) =>
      JSON.stringify({
        custom_id: `request-${i}`,
        method: 'POST',
        url: '/v1/chat/completions',
        body: { model: pool, messages: [{ role: 'user', content: `Line ${i}` }], max_tokens: 5 },
      }),
    ).join('\n');
    const file = await openai.files.create({ file: await toFile(Buffer.from(jsonl), 'lines.jsonl'), purpose: 'batch' });
    const created = await openai.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });

    // The doomed instance has finished a line or two and has more in flight: five or more at Azure, of
    // which each instance sends at most four, are some of each.
    const backgroundLines = (p: GatewayProcess) => p.logs.filter((line) => line.message === 'request' && line.lane === 'background');
    await until(() => backgroundLines(doomed!).length >= 2 && sim.stats('d').inFlight >= 5, 10_000, 'the doomed instance running lines');
    await doomed!.stop('SIGKILL');

    let batch = await openai.batches.retrieve(created.id);
    await until(
      async () => {
        batch = await openai.batches.retrieve(created.id);
        return batch.status === 'completed' || batch.status === 'failed';
      },
      20_000,
      'the batch completed on the surviving instance',
    );
    assert.equal(batch.status, 'completed');
    assert.deepEqual(batch.request_counts, { total: LINES, completed: LINES, failed: 0 });
    assert.equal(batch.error_file_id ?? null, null, 'no line failed');

    const output = (await (await openai.files.content(batch.output_file_id!)).text()).split('\n').filter(Boolean);
    const ids = output.map((line) => (JSON.parse(line) as { custom_id: string }).custom_id);
    assert.equal(ids.length, LINES, 'one result line per request line');
    assert.deepEqual([...ids].sort(), Array.from({ length: LINES }, (_, i) => `request-${i}`).sort(), 'every custom_id exactly once');
    for (const line of output) assert.equal((JSON.parse(line) as { response: { status_code: number } }).response.status_code, 200);

    // What Azure received: every line at least once; the lines the dead instance had in flight maybe twice.
    const seen = sim.recentRequests('d').filter((request) => request.clientRequestId?.startsWith(`${created.id}_`));
    const perLine = new Map<number, number>();
    for (const request of seen) {
      const index = Number(request.clientRequestId!.split('_')[2]);
      perLine.set(index, (perLine.get(index) ?? 0) + 1);
    }
    assert.equal(perLine.size, LINES, 'every line reached Azure');
    const twice = [...perLine.values()].filter((count) => count > 1).length;
    assert.ok(twice >= 1 && twice <= 4, `${twice} lines sent twice (at most the dead instance's four in flight)`);
    assert.ok(backgroundLines(survivor!).length >= LINES - backgroundLines(doomed!).length, 'the survivor ran the rest');
  });
});
