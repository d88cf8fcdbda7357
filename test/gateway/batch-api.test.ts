/**
 * The Batch API through its routes, with the real openai SDK (OpenAI and AzureOpenAI clients) on a real
 * listener and a real Redis: upload, retrieve, content, create, list, cancel and the output and error
 * files, run by a stand-in lane that sends each line to the simulator over HTTP and records the answer.
 * Also every refusal: bad files (problems with their lines, nothing stored), the size limit (413 before
 * and while streaming), the byte budget (507, nothing evicted, room back after delete and expiry),
 * other clients' objects (404), a lane that cannot queue, and no Redis at all (503).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import OpenAI, { AzureOpenAI, toFile } from 'openai';
import { createBatchRecords, type BatchStorage } from '../../gateway/background/batch-records.ts';
import type { BatchInfo, BatchLane, BatchRecords } from '../../gateway/background/contract.ts';
import { createOpsApp } from '../../gateway/http/ops-routes.ts';
import { LiveConfig } from '../../gateway/live-config.ts';
import { createLogger } from '../../gateway/logger.ts';
import { Metrics } from '../../gateway/metrics.ts';
import { LiveStore } from '../../gateway/routing/live-store.ts';
import { configSchema, type GatewayConfig } from '../../shared/config/schema.ts';
import type { Simulator } from '../../shared/simulator/index.ts';
import { MemoryStore } from '../../shared/store/index.ts';
import { simulator, sleep, until } from '../helpers/fixtures.ts';
import { startGateway, UPSTREAM_KEY } from '../helpers/gateway.ts';
import { send } from '../helpers/local-http.ts';

const KEY_A = 'team-a-key-0001';
const KEY_B = 'team-b-key-0002';
const DEPLOYMENT = 'chat-sim';

type Records = BatchRecords & BatchStorage;

/**
 * The lane's stand-in: on submit it takes the batch on (started) and, in `run` mode, sends each line
 * to the simulator over HTTP and records the answer; on cancel it skips the lines not settled yet.
 */
class StandInLane implements BatchLane {
  mode: 'run' | 'hold' | 'fail' = 'run';
  readonly submitted: BatchInfo[] = [];
  readonly cancelled: string[] = [];
  private readonly runs: Promise<void>[] = [];
  private readonly records: Records;
  private readonly simUrl: string;
  constructor(records: Records, simUrl: string) {
    this.records = records;
    this.simUrl = simUrl;
  }

  async submit(batch: BatchInfo): Promise<void> {
    if (this.mode === 'fail') throw new Error('the queue is not answering');
    this.submitted.push(batch);
    await this.records.started(batch.id);
    if (this.mode === 'run') this.runs.push(this.run(batch));
  }

  async cancel(batchId: string): Promise<void> {
    this.cancelled.push(batchId);
    const info = await this.records.info(batchId);
    const left: number[] = [];
    for (let index = 0; index < (info?.total ?? 0); index++) if (!(await this.records.settled(batchId, index))) left.push(index);
    await this.records.skip(batchId, left, 'cancelled');
  }

  /** Runs the lines of a batch held so far (`hold` mode), up to `count` of them. */
  async runHeld(batchId: string, count: number): Promise<void> {
    const info = await this.records.info(batchId);
    await this.run(info!, count);
  }

  async drain(): Promise<void> {
    await Promise.all(this.runs);
  }

  private async run(batch: BatchInfo, count = batch.total): Promise<void> {
    for (let index = 0; index < Math.min(count, batch.total); index++) {
      if (await this.records.settled(batch.id, index)) continue;
      const line = (await this.records.line(batch.id, index))!;
      const body = { ...(JSON.parse(line.body) as Record<string, unknown>), model: DEPLOYMENT };
      const response = await fetch(`${this.simUrl}/openai/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'api-key': UPSTREAM_KEY },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(5000),
      });
      const answer: unknown = await response.json();
      await this.records.record(batch.id, index, {
        kind: 'response',
        statusCode: response.status,
        requestId: response.headers.get('apim-request-id') ?? '',
        body: answer,
      });
    }
  }
}

interface BatchApi {
  url: string;
  prefix: string;
  records: Records;
  lane: StandInLane;
  config: GatewayConfig;
  close(): Promise<void>;
}

function chatLine(customId: string, extra: Record<string, unknown> = {}, body: Record<string, unknown> = {}): string {
  return JSON.stringify({
    custom_id: customId,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'chat', messages: [{ role: 'user', content: `Say ${customId}` }], max_tokens: 5, ...body },
    ...extra,
  });
}

const jsonl = (lines: string[]) => Buffer.from(`${lines.join('\n')}\n`);

describe('Batch API', () => {
  let sim: Simulator;
  let redis: Redis;
  const running: BatchApi[] = [];

  before(async () => {
    sim = await simulator([{ name: DEPLOYMENT, model: 'gpt-4o' }]);
    redis = new Redis(process.env.REDIS_URL!);
  });
  after(async () => {
    await Promise.allSettled(running.map((api) => api.close()));
    await redis.quit();
    await sim.close();
  });

  /** One gateway's ops app with the Batch API on its own key prefix, on a real listener. */
  async function startBatchApi(background: Record<string, unknown> = {}): Promise<BatchApi> {
    const deployment = { id: 'sim', endpoint: sim.url, deployment: DEPLOYMENT, apiKey: UPSTREAM_KEY, model: 'gpt-4o' };
    const config = configSchema.parse({
      gateway: { shutdownDelayMs: 0, maxBodyBytes: 8192 },
      pools: {
        chat: { slowStartMs: 0, deployments: [deployment] },
        other: { slowStartMs: 0, deployments: [deployment] },
        tiny: { slowStartMs: 0, deployments: [{ ...deployment, tpm: 100 }] },
        interactive: { slowStartMs: 0, deployments: [deployment], background: { enabled: false } },
      },
      clients: [
        { name: 'team-a', apiKey: KEY_A },
        { name: 'team-b', apiKey: KEY_B },
      ],
      background: { maxFileBytes: 64 * 1024, maxFileLines: 50, ...background },
    });
    const prefix = `test-batch-api-${randomUUID()}:`;
    const records = createBatchRecords(redis, config.background, { keyPrefix: prefix });
    const lane = new StandInLane(records, sim.url);
    const live = new LiveConfig(config);
    const metrics = new Metrics(false);
    const logger = createLogger('error', process.env.SPILLWAY_TEST_LOGS !== '1');
    const app = createOpsApp({
      config: live,
      stores: new LiveStore(new MemoryStore(), new MemoryStore(), metrics, logger),
      metrics,
      logger,
      adminApiKey: undefined,
      batches: { records, lane, config: live, settings: config.background, logger, metrics },
    });
    const server: Server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const api: BatchApi = {
      url,
      prefix,
      records,
      lane,
      config,
      async close() {
        // A run that failed (a test that failed) must not keep the listener and Redis open.
        await lane.drain().catch(() => undefined);
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length > 0) await redis.del(...keys);
      },
    };
    running.push(api);
    return api;
  }

  const openai = (api: BatchApi, key = KEY_A, base = '/openai/v1') =>
    new OpenAI({ baseURL: `${api.url}${base}`, apiKey: key, maxRetries: 0, timeout: 10_000 });
  const upload = async (client: OpenAI, content: Buffer, filename = 'requests.jsonl') =>
    client.files.create({ file: await toFile(content, filename), purpose: 'batch' });
  const text = async (response: Response) => Buffer.from(await response.arrayBuffer()).toString();
  /** What the client would download, parsed line by line. */
  const resultLines = async (client: OpenAI, fileId: string | null | undefined) => {
    assert.ok(fileId, 'the batch names that file');
    return (await text(await client.files.content(fileId)))
      .split('\n')
      .filter((line) => line !== '')
      .map(
        (line) =>
          JSON.parse(line) as {
            id: string;
            custom_id: string;
            response: { status_code: number; request_id: string; body: Record<string, unknown> } | null;
            error: unknown;
          },
      );
  };
  /** Keys of files and uploads (what a refused upload must not leave behind). */
  const fileKeys = async (api: BatchApi) =>
    (await redis.keys(`${api.prefix}*`)).filter((key) => key.includes(':file:') || key.includes(':upload:'));

  test('the OpenAI client end to end: upload, retrieve, content as uploaded, create, results line for line in input order', async () => {
    const api = await startBatchApi();
    const client = openai(api);
    // A CRLF line and a blank line: the content comes back byte for byte; blank lines are no requests.
    const input = Buffer.from(`${chatLine('one')}\r\n\n${chatLine('two')}\n${chatLine('three')}`);
    const file = await upload(client, input);
    assert.deepEqual(Object.keys(file).sort(), [
      'bytes',
      'created_at',
      'expires_at',
      'filename',
      'id',
      'object',
      'purpose',
      'status',
      'status_details',
    ]);
    assert.match(file.id, /^file-[A-Za-z0-9]{24}$/);
    assert.deepEqual(
      { object: file.object, bytes: file.bytes, filename: file.filename, purpose: file.purpose, status: file.status },
      { object: 'file', bytes: input.length, filename: 'requests.jsonl', purpose: 'batch', status: 'processed' },
    );
    assert.ok(Math.abs(file.created_at - Date.now() / 1000) < 5);
    assert.equal(file.expires_at, file.created_at + api.config.background.retentionMs / 1000);
    assert.deepEqual(await client.files.retrieve(file.id), file);
    assert.equal(await text(await client.files.content(file.id)), input.toString());

    // The first line's answer is a 500: it goes to the error file, the others to the output file.
    sim.setFault(DEPLOYMENT, { fault: { kind: 'status', status: 500 }, count: 1 });
    const received = sim.stats(DEPLOYMENT).received;
    const batch = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata: { job: 'nightly' },
    });
    assert.match(batch.id, /^batch_[A-Za-z0-9]{24}$/);
    assert.equal(batch.status, 'in_progress', 'the lane took it on before the answer');
    assert.deepEqual(
      api.lane.submitted.map((b) => [b.id, b.client, b.pool, b.endpoint, b.total]),
      [[batch.id, 'team-a', 'chat', '/v1/chat/completions', 3]],
    );
    assert.deepEqual(Object.keys(batch).sort(), [
      'cancelled_at',
      'cancelling_at',
      'completed_at',
      'completion_window',
      'created_at',
      'endpoint',
      'error_file_id',
      'errors',
      'expired_at',
      'expires_at',
      'failed_at',
      'finalizing_at',
      'id',
      'in_progress_at',
      'input_file_id',
      'metadata',
      'model',
      'object',
      'output_file_id',
      'request_counts',
      'status',
    ]);
    assert.deepEqual(batch.request_counts, { total: 3, completed: 0, failed: 0 });
    assert.equal(batch.output_file_id, null);
    assert.equal(batch.expires_at, batch.created_at + 24 * 3600);
    assert.deepEqual(batch.metadata, { job: 'nightly' });

    await api.lane.drain();
    assert.equal(sim.stats(DEPLOYMENT).received - received, 3, 'every line went to the simulator over HTTP');
    const done = await client.batches.retrieve(batch.id);
    assert.equal(done.status, 'completed');
    assert.deepEqual(done.request_counts, { total: 3, completed: 2, failed: 1 });
    for (const at of [done.in_progress_at, done.finalizing_at, done.completed_at])
      assert.ok(typeof at === 'number' && at >= done.created_at);
    assert.equal(done.cancelled_at, null);
    const output = await resultLines(client, done.output_file_id);
    assert.deepEqual(
      output.map((line) => [line.custom_id, line.response?.status_code, line.response?.body.object, line.error]),
      [
        ['two', 200, 'chat.completion', null],
        ['three', 200, 'chat.completion', null],
      ],
    );
    for (const line of output) {
      assert.match(line.id, /^batch_req_/);
      assert.ok(line.response?.request_id);
    }
    const failed = await resultLines(client, done.error_file_id);
    assert.deepEqual(
      failed.map((line) => [line.custom_id, line.response?.status_code, line.error]),
      [['one', 500, null]],
    );
    const outputFile = await client.files.retrieve(done.output_file_id!);
    assert.deepEqual(
      { purpose: outputFile.purpose, filename: outputFile.filename, status: outputFile.status },
      { purpose: 'batch_output', filename: `${batch.id}_output.jsonl`, status: 'processed' },
    );
    // The results count in the byte budget, as stored.
    const errorFile = await client.files.retrieve(done.error_file_id!);
    assert.equal(await api.records.files.usedBytes(), file.bytes + outputFile.bytes + errorFile.bytes);
  });

  test('the AzureOpenAI client: /openai/files and /openai/batches with api-version, Azure endpoint names, and a client with a deployment', async () => {
    const api = await startBatchApi();
    const azure = new AzureOpenAI({ endpoint: api.url, apiKey: KEY_A, apiVersion: '2024-10-21', maxRetries: 0 });
    const file = await azure.files.create({
      file: await toFile(jsonl([chatLine('a', { url: '/chat/completions' }), chatLine('b')]), 'azure.jsonl'),
      purpose: 'batch',
    });
    const batch = await azure.batches.create({
      input_file_id: file.id,
      endpoint: '/chat/completions' as '/v1/chat/completions',
      completion_window: '24h',
    });
    assert.equal(batch.endpoint, '/chat/completions', 'the endpoint as the client named it');
    await api.lane.drain();
    const done = await azure.batches.retrieve(batch.id);
    assert.deepEqual([done.status, done.request_counts?.completed], ['completed', 2]);
    assert.equal((await resultLines(azure, done.output_file_id)).length, 2);
    assert.ok((await azure.batches.list()).data.some((b) => b.id === batch.id));
    // With a deployment, the AzureOpenAI client posts batches to /openai/deployments/{name}/batches.
    const withDeployment = new AzureOpenAI({
      endpoint: api.url,
      apiKey: KEY_A,
      apiVersion: '2024-10-21',
      deployment: 'chat',
      maxRetries: 0,
    });
    const again = await withDeployment.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    assert.equal(again.input_file_id, file.id);
  });

  test('lists: newest first, limit and after, the SDK pages through; files by purpose and order; /v1 paths', async () => {
    const api = await startBatchApi();
    const client = openai(api);
    const files = [];
    for (const name of ['f1', 'f2', 'f3']) files.push(await upload(client, jsonl([chatLine(name)]), `${name}.jsonl`));
    const batches = [];
    for (const file of files)
      batches.push(await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' }));
    const firstPage = await client.batches.list({ limit: 2 });
    assert.deepEqual(
      firstPage.data.map((b) => b.id),
      [batches[2]!.id, batches[1]!.id],
    );
    assert.equal(firstPage.has_more, true);
    const all = [];
    for await (const batch of client.batches.list({ limit: 2 })) all.push(batch.id);
    assert.deepEqual(all, batches.map((b) => b.id).reverse());
    await api.lane.drain();

    const inputs = await client.files.list({ purpose: 'batch', order: 'asc' });
    assert.deepEqual(
      inputs.data.map((f) => f.id),
      files.map((f) => f.id),
    );
    const outputs = await client.files.list({ purpose: 'batch_output' });
    assert.equal(outputs.data.length, 3);
    assert.ok(outputs.data.every((f) => f.purpose === 'batch_output'));
    const everything = [];
    for await (const file of client.files.list({ limit: 2 })) everything.push(file.id);
    assert.equal(everything.length, 6);
    assert.equal(new Set(everything).size, 6);
    assert.equal((await client.files.list({ purpose: 'fine-tune' })).data.length, 0);
    // The same through /v1 (an OpenAI client pointed at the gateway's root).
    const plain = openai(api, KEY_A, '/v1');
    assert.equal((await plain.batches.retrieve(batches[0]!.id)).id, batches[0]!.id);
    const bad = await fetch(`${api.url}/openai/v1/batches?limit=zero`, { headers: { 'api-key': KEY_A } });
    assert.equal(bad.status, 400);
  });

  test('cancel: cancelling at once, cancelled when the lane skipped the rest, partial results kept; an ended batch is a 409 the SDK does not retry', async () => {
    const api = await startBatchApi();
    api.lane.mode = 'hold';
    const client = openai(api);
    const file = await upload(client, jsonl([chatLine('a'), chatLine('b'), chatLine('c')]));
    const batch = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    await api.lane.runHeld(batch.id, 1);
    const cancelling = await client.batches.cancel(batch.id);
    assert.deepEqual(api.lane.cancelled, [batch.id]);
    // The stand-in lane skips synchronously; the answer is the batch as the lane left it.
    assert.equal(cancelling.status, 'cancelled');
    assert.ok(cancelling.cancelling_at && cancelling.cancelled_at);
    assert.deepEqual(cancelling.request_counts, { total: 3, completed: 1, failed: 0 });
    assert.equal((await resultLines(client, cancelling.output_file_id)).length, 1);
    assert.equal(cancelling.error_file_id, null);

    const retrying = openai(api);
    retrying.maxRetries = 2;
    const started = Date.now();
    await assert.rejects(retrying.batches.cancel(batch.id), (error: InstanceType<typeof OpenAI.APIError>) => {
      assert.equal(error.status, 409);
      assert.match(error.message, /Cannot cancel a batch with status 'cancelled'/);
      return true;
    });
    assert.ok(Date.now() - started < 400, 'no retry of the 409 (x-should-retry: false)');

    // A lane that cannot stop the lines: 503, the batch stays cancelling, a retried cancel finishes it.
    const second = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    const cancel = api.lane.cancel.bind(api.lane);
    api.lane.cancel = () => Promise.reject(new Error('queue away'));
    await assert.rejects(client.batches.cancel(second.id), { status: 503 });
    assert.equal((await client.batches.retrieve(second.id)).status, 'cancelling');
    api.lane.cancel = cancel;
    assert.equal((await client.batches.cancel(second.id)).status, 'cancelled');
  });

  test('a bad file is refused with its problems and their line numbers, and nothing is stored', async () => {
    const api = await startBatchApi();
    const client = openai(api);
    const lines = [
      chatLine('ok'),
      '{"custom_id": "cut"',
      chatLine('ok'),
      chatLine('get', { method: 'GET' }),
      chatLine('where', { url: '/v1/images/generations' }),
      chatLine('unknown', {}, { model: 'nope' }),
      chatLine('interactive', {}, { model: 'interactive' }),
      chatLine('other', {}, { model: 'other' }),
      chatLine('stream', {}, { stream: true }),
      chatLine('huge', {}, { messages: [{ role: 'user', content: 'x'.repeat(9000) }] }),
    ];
    const used = await api.records.files.usedBytes();
    await assert.rejects(upload(client, jsonl(lines)), (error: InstanceType<typeof OpenAI.APIError>) => {
      assert.equal(error.status, 400);
      const body = error.error as { code: string; message: string; details: { line: number; code: string }[] };
      assert.equal(body.code, 'invalid_batch_file');
      assert.deepEqual(
        body.details.map((d) => [d.line, d.code]),
        [
          [2, 'invalid_json_line'],
          [3, 'duplicate_custom_id'],
          [4, 'invalid_method'],
          [5, 'invalid_url'],
          [6, 'model_not_found'],
          [7, 'model_not_batchable'],
          [8, 'mismatched_model'],
          [9, 'stream_not_supported'],
          [10, 'body_too_large'],
        ],
      );
      assert.match(body.message, /9 problems; nothing was stored\. line 2: the line is not valid JSON; line 3: /);
      return true;
    });
    // An estimate no deployment's budget can hold, as an interactive request would be told.
    await assert.rejects(
      upload(client, jsonl([chatLine('big', {}, { model: 'tiny', max_tokens: 500 })])),
      (error: InstanceType<typeof OpenAI.APIError>) => {
        assert.match(String((error.error as { message: string }).message), /line 1: .*largest token budget of pool tiny/);
        return true;
      },
    );
    await assert.rejects(
      upload(client, jsonl(Array.from({ length: 51 }, (_, i) => chatLine(`n${i}`)))),
      /line 51: the file has more than 50 requests/,
    );
    await assert.rejects(upload(client, Buffer.from('\n\n')), /the file has no request lines/);
    // Nothing of them is stored: no file, no bytes, no upload keys.
    assert.equal((await client.files.list()).data.length, 0);
    assert.equal(await api.records.files.usedBytes(), used);
    assert.deepEqual(await fileKeys(api), []);
    // Other purposes are refused, whether the purpose comes before the file or after it.
    for (const purposeFirst of [true, false]) {
      const form = new FormData();
      if (purposeFirst) form.append('purpose', 'fine-tune');
      form.append('file', new Blob([jsonl([chatLine('a')])]), 'a.jsonl');
      if (!purposeFirst) form.append('purpose', 'fine-tune');
      const response = await fetch(`${api.url}/openai/v1/files`, { method: 'POST', headers: { 'api-key': KEY_A }, body: form });
      assert.equal(response.status, 400);
      assert.match(await response.text(), /purpose must be batch, not \\"fine-tune\\"/);
    }
    assert.equal(await api.records.files.usedBytes(), used);
  });

  test('a file over the size limit: 413 from its Content-Length before it is read, and while it streams without one; nothing stays', async () => {
    const api = await startBatchApi({ maxFileBytes: 4096 });
    const client = openai(api);
    const big = jsonl(Array.from({ length: 40 }, (_, i) => chatLine(`line-${i}`)));
    assert.ok(big.length > 4096);
    // Declared: refused at once (a declared length past the limit plus the multipart overhead).
    const declared = await send(api.url, {
      path: '/openai/v1/files',
      headers: { 'api-key': KEY_A, 'content-type': 'multipart/form-data; boundary=xyz', 'content-length': String(200 * 1024) },
      body: Buffer.alloc(200 * 1024, 'a'),
    });
    assert.equal(declared.status, 413);
    assert.equal(JSON.parse(declared.body.toString()).error.code, 'file_too_large');
    // Streamed (chunked, no length): the limit is hit while busboy reads the file; the answer comes and the connection closes.
    const boundary = 'spillway-test-boundary';
    const head = Buffer.from(
      `--${boundary}\r\ncontent-disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="big.jsonl"\r\ncontent-type: application/jsonl\r\n\r\n`,
    );
    const pieces = [head, ...Array.from({ length: 64 }, () => big.subarray(0, 4000)), Buffer.from(`\r\n--${boundary}--\r\n`)];
    const startedAt = Date.now();
    const streamed = await send(api.url, {
      path: '/openai/v1/files',
      headers: { 'api-key': KEY_A, 'content-type': `multipart/form-data; boundary=${boundary}` },
      body: pieces,
      timeoutMs: 5000,
    });
    assert.equal(streamed.status, 413);
    assert.equal(streamed.timedOut, false);
    assert.ok(Date.now() - startedAt < 4000, 'the connection was not left hanging');
    assert.equal(streamed.headers.connection, 'close');
    // The SDK (Content-Length from FormData) gets the same 413.
    await assert.rejects(upload(client, Buffer.concat([big, big])), { status: 413 });
    await until(async () => (await api.records.files.usedBytes()) === 0, 2000, 'reservations released');
    assert.deepEqual(await fileKeys(api), []);
  });

  test('the byte budget: an upload that would not fit is a 507 (not retried), nothing is evicted; room comes back after a delete and after expiry', async () => {
    const api = await startBatchApi({ storeBytes: 3600 });
    const client = openai(api);
    const small = jsonl(Array.from({ length: 6 }, (_, i) => chatLine(`s${i}`)));
    const large = jsonl(Array.from({ length: 20 }, (_, i) => chatLine(`l${i}`)));
    // Together they do not fit; the large one alone does, with its multipart framing.
    assert.ok(small.length + large.length > 3600 && large.length + 400 < 3600, `${small.length} ${large.length}`);
    const first = await upload(client, small);
    const form = new FormData();
    form.append('purpose', 'batch');
    form.append('file', new Blob([large]), 'large.jsonl');
    const refused = await fetch(`${api.url}/openai/v1/files`, { method: 'POST', headers: { 'api-key': KEY_A }, body: form });
    assert.equal(refused.status, 507);
    assert.equal(refused.headers.get('x-should-retry'), 'false');
    const error = (await refused.json()) as { error: { code: string; message: string } };
    assert.equal(error.error.code, 'insufficient_storage');
    assert.match(error.error.message, new RegExp(`store is full: ${small.length} of 3600 bytes .* Delete files you no longer need`));
    // Nothing was evicted to make room.
    assert.equal(await text(await client.files.content(first.id)), small.toString());
    assert.deepEqual(await client.files.delete(first.id), { id: first.id, object: 'file', deleted: true });
    await assert.rejects(client.files.retrieve(first.id), { status: 404 });
    const second = await upload(client, large);
    assert.equal(await api.records.files.usedBytes(), large.length);
    await client.files.delete(second.id);

    // Expiry: a file past its retention is gone, and its bytes leave the count at the next upload.
    const shortLived = await startBatchApi({ storeBytes: 3600, retentionMs: 400 });
    const short = openai(shortLived);
    const old = await upload(short, small);
    await sleep(500);
    const fresh = await upload(short, large);
    assert.equal(await shortLived.records.files.usedBytes(), large.length);
    await assert.rejects(short.files.retrieve(old.id), { status: 404 });
    assert.deepEqual(
      (await short.files.list()).data.map((f) => f.id),
      [fresh.id],
    );
  });

  test('another client sees none of it: 404 for its files and batches, empty lists, its file cannot start a batch', async () => {
    const api = await startBatchApi();
    const owner = openai(api, KEY_A);
    const other = openai(api, KEY_B);
    const file = await upload(owner, jsonl([chatLine('a')]));
    const batch = await owner.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    await api.lane.drain();
    const done = await owner.batches.retrieve(batch.id);
    for (const call of [
      () => other.files.retrieve(file.id),
      () => other.files.content(file.id),
      () => other.files.delete(file.id),
      () => other.files.retrieve(done.output_file_id!),
      () => other.batches.retrieve(batch.id),
      () => other.batches.cancel(batch.id),
      () => other.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' }),
    ]) {
      await assert.rejects(call(), { status: 404 });
    }
    assert.equal((await other.files.list()).data.length, 0);
    assert.equal((await other.batches.list()).data.length, 0);
    // A cursor naming another client's object starts no page.
    assert.equal((await other.batches.list({ after: batch.id })).data.length, 0);
    assert.ok(await owner.files.retrieve(file.id));
    // No key, a wrong key: 401 on every route.
    for (const [method, path] of [
      ['GET', '/openai/v1/files'],
      ['POST', '/openai/v1/files'],
      ['GET', `/openai/v1/files/${file.id}/content`],
      ['POST', '/openai/v1/batches'],
      ['POST', `/openai/v1/batches/${batch.id}/cancel`],
    ] as const) {
      const response = await fetch(`${api.url}${path}`, { method, headers: { 'api-key': 'not-a-client-key' } });
      assert.equal(response.status, 401, `${method} ${path}`);
    }
  });

  test("a running batch's input cannot be deleted (409); once the batch ended it can, and its bytes leave the budget", async () => {
    const api = await startBatchApi();
    api.lane.mode = 'hold';
    const client = openai(api);
    const file = await upload(client, jsonl([chatLine('a'), chatLine('b')]));
    const batch = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    await assert.rejects(client.files.delete(file.id), (error: InstanceType<typeof OpenAI.APIError>) => {
      assert.equal(error.status, 409);
      assert.match(error.message, new RegExp(`input of batch ${batch.id}, which has not ended`));
      return true;
    });
    await api.lane.runHeld(batch.id, 2);
    assert.equal((await client.batches.retrieve(batch.id)).status, 'completed');
    const before = await api.records.files.usedBytes();
    assert.deepEqual(await client.files.delete(file.id), { id: file.id, object: 'file', deleted: true });
    assert.equal(await api.records.files.usedBytes(), before - file.bytes);
    await assert.rejects(client.files.content(file.id), { status: 404 });
    // The batch's results outlive its input.
    assert.equal((await resultLines(client, (await client.batches.retrieve(batch.id)).output_file_id)).length, 2);
  });

  test('creating a batch: the input file, endpoint, window and metadata are checked; a lane that cannot queue fails the batch with a 503', async () => {
    const api = await startBatchApi();
    const client = openai(api);
    const file = await upload(client, jsonl([chatLine('a')]));
    const create = (body: Record<string, unknown>) =>
      client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h', ...body } as Parameters<
        typeof client.batches.create
      >[0]);
    await assert.rejects(create({ input_file_id: 'file-doesnotexist' }), { status: 404 });
    await assert.rejects(create({ input_file_id: '../etc' }), { status: 404 });
    await assert.rejects(
      create({ endpoint: '/v1/embeddings' }),
      /line 1 of file-.* has url \/v1\/chat\/completions, not the batch's endpoint \/v1\/embeddings/,
    );
    await assert.rejects(create({ endpoint: '/v1/completions' }), /endpoint must be one of/);
    await assert.rejects(create({ completion_window: '48h' }), /completion_window must be "24h"/);
    await assert.rejects(
      create({ metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) }),
      /at most 16 pairs/,
    );
    await assert.rejects(create({ metadata: { key: 'v'.repeat(513) } }), /at most 512 characters/);
    await assert.rejects(create({ metadata: { key: 1 } }), /must be strings/);
    const body = await fetch(`${api.url}/openai/v1/batches`, {
      method: 'POST',
      headers: { 'api-key': KEY_A, 'content-type': 'application/json' },
      body: '{"input_file_id": ',
    });
    assert.equal(body.status, 400);
    const tooLarge = await fetch(`${api.url}/openai/v1/batches`, {
      method: 'POST',
      headers: { 'api-key': KEY_A, 'content-type': 'application/json' },
      body: JSON.stringify({ pad: 'x'.repeat(70_000) }),
    });
    assert.equal(tooLarge.status, 413);
    // An output file is no input.
    const first = await create({});
    await api.lane.drain();
    const outputId = (await client.batches.retrieve(first.id)).output_file_id!;
    await assert.rejects(create({ input_file_id: outputId }), /is a batch's output file; a batch reads a file uploaded with purpose batch/);

    api.lane.mode = 'fail';
    await assert.rejects(create({}), (error: InstanceType<typeof OpenAI.APIError>) => {
      assert.equal(error.status, 503);
      assert.match(error.message, /could not be queued \(it is marked failed\)/);
      return true;
    });
    const failed = (await client.batches.list()).data[0]!;
    assert.equal(failed.status, 'failed');
    assert.deepEqual(
      failed.errors?.data?.map((e) => e.code),
      ['queue_unavailable'],
    );
    assert.ok(failed.failed_at);
    // A failed batch no longer holds its input.
    api.lane.mode = 'run';
    await api.lane.drain();
    assert.deepEqual(await client.files.delete(file.id), { id: file.id, object: 'file', deleted: true });
  });

  test('without Redis (the in-memory store) every Batch route answers 503 with what to do, after auth', async () => {
    const config = configSchema.parse({
      gateway: { shutdownDelayMs: 0 },
      pools: { chat: { deployments: [{ id: 'sim', endpoint: sim.url, deployment: DEPLOYMENT, apiKey: UPSTREAM_KEY }] } },
      clients: [{ name: 'team-a', apiKey: KEY_A }],
    });
    const gateway = await startGateway(config, { memory: true });
    try {
      const client = new OpenAI({ baseURL: `${gateway.url}/openai/v1`, apiKey: KEY_A, maxRetries: 0 });
      await assert.rejects(upload(client, jsonl([chatLine('a')])), (error: InstanceType<typeof OpenAI.APIError>) => {
        assert.equal(error.status, 503);
        assert.match(error.message, /The Batch API needs Redis: set REDIS_URL/);
        return true;
      });
      for (const call of [
        () => client.batches.list(),
        () => client.batches.retrieve('batch_x'),
        () => client.files.list(),
        () => client.files.content('file-x'),
      ]) {
        await assert.rejects(call(), { status: 503 });
      }
      const azure = await fetch(`${gateway.url}/openai/batches?api-version=2024-10-21`, { headers: { 'api-key': KEY_A } });
      assert.equal(azure.status, 503);
      const unknown = await fetch(`${gateway.url}/openai/v1/batches`, { headers: { 'api-key': 'wrong-key-0000' } });
      assert.equal(unknown.status, 401);
      // The rest of the gateway is unchanged.
      assert.equal((await fetch(`${gateway.url}/openai/v1/models`, { headers: { 'api-key': KEY_A } })).status, 200);
    } finally {
      await gateway.close();
    }
  });
});
