/**
 * The Batch API's records on a real Redis, as the lane uses them (contract.ts): lines read back from
 * the stored file, each line's first outcome kept (also under concurrent duplicates), finalisation
 * with the last line (completed, expired, cancelled), result files in input order, the byte budget
 * counting results, and expiry.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { createBatchRecords, type BatchStorage } from '../../../gateway/background/batch-records.ts';
import type { BatchRecords } from '../../../gateway/background/contract.ts';
import { CHUNK_BYTES } from '../../../gateway/background/records/keys.ts';
import { BatchFileCheck } from '../../../gateway/background/records/line-check.ts';
import type { FileRecord } from '../../../gateway/background/records/shapes.ts';
import { buildPools } from '../../../gateway/pools.ts';
import { configSchema } from '../../../shared/config/schema.ts';
import { NOWHERE } from '../../helpers/collaborators.ts';
import { sleep } from '../../helpers/fixtures.ts';

const config = configSchema.parse({ pools: { chat: { deployments: [{ id: 'd', endpoint: NOWHERE, deployment: 'd', apiKey: 'k' }] } } });
const pools = buildPools(config);

type Records = BatchRecords & BatchStorage;

function requestLine(customId: string, content = 'Hello'): string {
  return JSON.stringify({
    custom_id: customId,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'chat', messages: [{ role: 'user', content }], max_tokens: 5 },
  });
}

async function* chunksOf(bytes: Buffer, size = 7): AsyncGenerator<Buffer> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}

async function storeFile(records: Records, lines: string[], client = 'team-a', chunkSize = 7): Promise<FileRecord> {
  const bytes = Buffer.from(`${lines.join('\n')}\n`);
  const reservation = await records.files.reserve(bytes.length);
  assert.ok(reservation.ok);
  const check = new BatchFileCheck({ pools, maxBodyBytes: 256 * 1024, maxLines: 1000 });
  const result = await reservation.upload.receive(chunksOf(bytes, chunkSize), check);
  assert.ok(result.ok, JSON.stringify(result));
  return reservation.upload.commit(client, 'input.jsonl', result.summary);
}

async function contentOf(records: Records, fileId: string | undefined): Promise<Record<string, unknown>[]> {
  assert.ok(fileId, 'the batch has that file');
  const file = await records.files.get(fileId);
  assert.ok(file);
  const chunks: Buffer[] = [];
  for await (const chunk of records.files.content(file)) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString();
  assert.equal(Buffer.byteLength(text), file.bytes, 'the file object counts its bytes');
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

const ok = (body: unknown) => ({ kind: 'response' as const, statusCode: 200, requestId: 'req-1', body });

describe('batch records (Redis)', () => {
  let redis: Redis;
  let prefix: string;
  let records: Records;

  before(() => {
    redis = new Redis(process.env.REDIS_URL!);
  });
  afterEach(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
  });
  after(async () => {
    await redis.quit();
  });
  const fresh = (settings: Partial<typeof config.background> = {}) => {
    prefix = `test-batch-records-${randomUUID()}:`;
    records = createBatchRecords(redis, { ...config.background, ...settings }, { keyPrefix: prefix });
    return records;
  };
  const newBatch = async (lines: string[]) => {
    const file = await storeFile(records, lines);
    const batch = await records.batches.create({
      client: 'team-a',
      file,
      endpoint: '/v1/chat/completions',
      endpointShown: '/v1/chat/completions',
      metadata: null,
    });
    assert.ok(batch);
    return { file, batch };
  };

  test('lines read back as stored; info; started moves validating to in_progress once', async () => {
    fresh();
    const { batch } = await newBatch([requestLine('first', 'un'), '', requestLine('second', 'deux')]);
    assert.deepEqual(await records.line(batch.id, 1), {
      index: 1,
      customId: 'second',
      body: JSON.stringify({ model: 'chat', messages: [{ role: 'user', content: 'deux' }], max_tokens: 5 }),
    });
    assert.equal((await records.line(batch.id, 0))?.customId, 'first');
    assert.equal(await records.line(batch.id, 2), undefined);
    assert.equal(await records.line('batch_unknown', 0), undefined);
    const info = await records.info(batch.id);
    assert.deepEqual(
      { ...info, createdAt: 0, expiresAt: info!.expiresAt - info!.createdAt },
      {
        id: batch.id,
        client: 'team-a',
        pool: 'chat',
        endpoint: '/v1/chat/completions',
        total: 2,
        status: 'validating',
        createdAt: 0,
        expiresAt: 24 * 3600_000,
      },
    );
    await records.started(batch.id);
    await records.started(batch.id);
    const started = await records.batches.get(batch.id);
    assert.equal(started?.status, 'in_progress');
    assert.ok(started?.inProgressAt);
  });

  test('a file over several chunk keys: every line reads back whole (also one longer than a chunk), the content byte for byte', async () => {
    fresh();
    const lines = Array.from({ length: 300 }, (_, i) => requestLine(`line-${i}`, `${i} `.repeat(100 + (i % 7) * 30)));
    lines[150] = requestLine('long', 'y'.repeat(3 * CHUNK_BYTES));
    const file = await storeFile(records, lines, 'team-a', 10_000);
    assert.ok(file.chunks >= 5, `${file.chunks} chunks`);
    const batch = await records.batches.create({
      client: 'team-a',
      file,
      endpoint: '/v1/chat/completions',
      endpointShown: '/v1/chat/completions',
      metadata: null,
    });
    const read = await Promise.all(lines.map((_, i) => records.line(batch!.id, i)));
    read.forEach((line, i) => {
      const expected = JSON.parse(lines[i]!) as { custom_id: string; body: unknown };
      assert.equal(line?.customId, expected.custom_id);
      assert.equal(line?.body, JSON.stringify(expected.body));
    });
    const chunks: Buffer[] = [];
    for await (const chunk of records.files.content(file)) chunks.push(chunk);
    assert.equal(Buffer.concat(chunks).toString(), `${lines.join('\n')}\n`);
  });

  test("a line's first outcome is kept, later ones dropped, even when they race; the last line finalises the batch", async () => {
    fresh();
    const { batch } = await newBatch([requestLine('a'), requestLine('b'), requestLine('c')]);
    // Out of order, with a duplicate of line 2 racing itself twenty times.
    assert.deepEqual(await records.record(batch.id, 2, ok({ n: 2 })), { recorded: true, finished: false });
    const racing = await Promise.all(Array.from({ length: 20 }, (_, i) => records.record(batch.id, 0, ok({ n: 0, try: i }))));
    assert.equal(racing.filter((r) => r.recorded).length, 1);
    assert.deepEqual(await records.record(batch.id, 2, ok({ n: 'again' })), { recorded: false, finished: false });
    assert.equal(await records.settled(batch.id, 1), false);
    const last = await records.record(batch.id, 1, {
      kind: 'response',
      statusCode: 400,
      requestId: 'req-2',
      body: { error: { message: 'bad' } },
    });
    assert.deepEqual(last, { recorded: true, finished: true });
    assert.equal(await records.settled(batch.id, 1), true);
    assert.deepEqual(await records.record(batch.id, 1, ok({})), { recorded: false, finished: false });

    const done = await records.batches.get(batch.id);
    assert.equal(done?.status, 'completed');
    assert.deepEqual([done?.total, done?.completed, done?.failed], [3, 2, 1]);
    assert.ok(done?.finalizingAt && done.completedAt);
    const output = await contentOf(records, done?.outputFileId);
    assert.deepEqual(
      output.map((line) => [line.custom_id, (line.response as { body: { n: unknown } }).body.n, line.error]),
      [
        ['a', 0, null],
        ['c', 2, null],
      ],
    );
    assert.match(String(output[0]!.id), /^batch_req_[A-Za-z0-9]{24}$/);
    const errorsFile = await contentOf(records, done?.errorFileId);
    assert.deepEqual(errorsFile, [
      {
        id: errorsFile[0]!.id,
        custom_id: 'b',
        response: { status_code: 400, request_id: 'req-2', body: { error: { message: 'bad' } } },
        error: null,
      },
    ]);
    // Both files are the client's now, purpose batch_output.
    const listed = await records.files.list('team-a', 'batch_output', 10, undefined, 'desc');
    assert.deepEqual(listed.data.map((f) => f.id).sort(), [done!.outputFileId, done!.errorFileId].sort());
  });

  test('expired lines get batch_expired error lines and the batch ends expired; no output file when nothing succeeded', async () => {
    fresh();
    const { batch } = await newBatch([requestLine('a'), requestLine('b')]);
    await records.record(batch.id, 0, { kind: 'error', code: 'upstream_unreachable', message: 'no deployment answered' });
    assert.deepEqual(await records.skip(batch.id, [1, 1, 7], 'expired'), { finished: true });
    const done = await records.batches.get(batch.id);
    assert.equal(done?.status, 'expired');
    assert.ok(done?.expiredAt);
    assert.equal(done?.outputFileId, undefined);
    assert.deepEqual([done?.completed, done?.failed], [0, 2]);
    const lines = await contentOf(records, done?.errorFileId);
    assert.deepEqual(
      lines.map((l) => [l.custom_id, l.response, l.error]),
      [
        ['a', null, { code: 'upstream_unreachable', message: 'no deployment answered' }],
        ['b', null, { code: 'batch_expired', message: 'This request could not be executed before the completion window expired.' }],
      ],
    );
  });

  test('a cancelling batch ends cancelled when its last line is skipped; cancelled lines leave no result', async () => {
    fresh();
    const { batch, file } = await newBatch([requestLine('a'), requestLine('b'), requestLine('c')]);
    await records.record(batch.id, 0, ok({ n: 0 }));
    assert.equal(await records.batches.markCancelling(batch.id), 'moved');
    assert.equal(await records.batches.markCancelling(batch.id), 'already');
    // The input of a batch not ended cannot be deleted.
    assert.deepEqual(await records.files.delete(file), { deleted: false, inputOf: batch.id });
    assert.deepEqual(await records.skip(batch.id, [1, 2], 'cancelled'), { finished: true });
    const done = await records.batches.get(batch.id);
    assert.equal(done?.status, 'cancelled');
    assert.ok(done?.cancellingAt && done.cancelledAt);
    assert.deepEqual([done?.completed, done?.failed], [1, 0]);
    assert.equal(done?.errorFileId, undefined);
    assert.equal((await contentOf(records, done?.outputFileId)).length, 1);
    assert.equal(await records.batches.markCancelling(batch.id), 'refused');
    assert.deepEqual(await records.files.delete(file), { deleted: true });
    assert.deepEqual(await redis.keys(`${prefix}*${file.id}*`), [], 'no key of the file is left');
  });

  test('a file refused after some of it was written leaves no key and no reservation behind', async () => {
    fresh();
    const lines = Array.from({ length: 200 }, (_, i) => requestLine(`line-${i}`, 'z'.repeat(1000)));
    lines.push('{"custom_id": "cut');
    const bytes = Buffer.from(lines.join('\n'));
    const reservation = await records.files.reserve(bytes.length);
    assert.ok(reservation.ok);
    const check = new BatchFileCheck({ pools, maxBodyBytes: 4096, maxLines: 1000 });
    const result = await reservation.upload.receive(chunksOf(bytes, 16_384), check);
    assert.equal(result.ok, false);
    assert.ok((await redis.keys(`${prefix}*:data:*`)).length >= 2, 'chunks were written before the bad line came');
    await reservation.upload.abandon();
    assert.deepEqual(await redis.keys(`${prefix}*:file:*`), []);
    assert.equal(await records.files.usedBytes(), 0);
  });

  test('the byte budget counts files and results, frees them on delete, and refuses what would not fit', async () => {
    fresh({ storeBytes: 4000 });
    const { file, batch } = await newBatch([requestLine('a'), requestLine('b')]);
    assert.equal(await records.files.usedBytes(), file.bytes);
    await records.record(batch.id, 0, ok({ text: 'x'.repeat(1000) }));
    await records.record(batch.id, 1, { kind: 'error', code: 'c', message: 'm' });
    const done = await records.batches.get(batch.id);
    const output = (await records.files.get(done!.outputFileId!))!;
    const errorFile = (await records.files.get(done!.errorFileId!))!;
    assert.equal(await records.files.usedBytes(), file.bytes + output.bytes + errorFile.bytes);
    // Results are never refused: the store may now hold more than another upload could reserve.
    const refused = await records.files.reserve(4000 - file.bytes);
    assert.deepEqual(refused, { ok: false, usedBytes: file.bytes + output.bytes + errorFile.bytes, storeBytes: 4000 });
    assert.deepEqual(await records.files.delete(output), { deleted: true });
    assert.equal(await records.files.usedBytes(), file.bytes + errorFile.bytes);
    assert.equal(await records.files.get(output.id), undefined);
    // A reservation abandoned leaves nothing.
    const reservation = await records.files.reserve(100);
    assert.ok(reservation.ok);
    assert.equal(await records.files.usedBytes(), file.bytes + errorFile.bytes + 100);
    await reservation.upload.abandon();
    assert.equal(await records.files.usedBytes(), file.bytes + errorFile.bytes);
  });

  test('an expired file is gone, and its bytes leave the count at the next upload', async () => {
    fresh({ retentionMs: 300, storeBytes: 10_000 });
    const file = await storeFile(records, [requestLine('a')]);
    assert.equal(await records.files.usedBytes(), file.bytes);
    await sleep(400);
    assert.equal(await records.files.get(file.id), undefined);
    assert.equal((await records.files.list('team-a', undefined, 10, undefined, 'desc')).data.length, 0);
    const reservation = await records.files.reserve(10);
    assert.ok(reservation.ok);
    assert.equal(await records.files.usedBytes(), 10);
    await reservation.upload.abandon();
  });
});
