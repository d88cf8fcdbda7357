/**
 * The lane's tests' own records (gateway/background/contract.ts BatchRecords) and listener: a small
 * stand-in for the Batch API's records in the test Redis (first outcome kept, the batch finished when
 * its last line settles), and an HTTP server in the place of the gateway's listener, whose answers a
 * test scripts, so each way a line's answer can go is seen on its own.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import type { BatchInfo, BatchLine, BatchRecords, BatchStatus, LineOutcome } from '../../../gateway/background/contract.ts';

export interface Settled {
  index: number;
  outcome?: LineOutcome;
  skipped?: 'cancelled' | 'expired';
}

export class StandInRecords implements BatchRecords {
  readonly redis: Redis;
  private readonly prefix: string;
  /** Calls of `record` and `skip` per line, dropped or kept: how often the lane settled each line. */
  readonly calls = new Map<string, number>();

  constructor(url: string, prefix: string) {
    this.redis = new Redis(url, { maxRetriesPerRequest: 2 });
    this.prefix = prefix;
  }

  /** A batch of `total` lines, as the routes would have created it (status validating). */
  async create(input: {
    client: string;
    pool: string;
    total: number;
    expiresAt?: number;
    body?: (index: number) => object;
  }): Promise<BatchInfo> {
    const batch: BatchInfo = {
      id: `batch_${randomBytes(8).toString('hex')}`,
      client: input.client,
      pool: input.pool,
      endpoint: '/v1/chat/completions',
      total: input.total,
      status: 'validating',
      expiresAt: input.expiresAt ?? Date.now() + 60 * 60_000,
      createdAt: Date.now(),
    };
    const lines: Record<string, string> = {};
    for (let index = 0; index < input.total; index++) {
      const body = input.body?.(index) ?? { model: input.pool, messages: [{ role: 'user', content: `line ${index}` }], max_tokens: 5 };
      lines[String(index)] = JSON.stringify({ index, customId: `line-${index}`, body: JSON.stringify(body) } satisfies BatchLine);
    }
    await this.redis.multi().set(this.key(batch.id), JSON.stringify(batch)).hset(this.key(batch.id, 'lines'), lines).exec();
    return batch;
  }

  async setStatus(batchId: string, status: BatchStatus): Promise<void> {
    const batch = await this.info(batchId);
    if (batch) await this.redis.set(this.key(batchId), JSON.stringify({ ...batch, status }));
  }

  async info(batchId: string): Promise<BatchInfo | undefined> {
    const text = await this.redis.get(this.key(batchId));
    return text ? (JSON.parse(text) as BatchInfo) : undefined;
  }

  async line(batchId: string, index: number): Promise<BatchLine | undefined> {
    const text = await this.redis.hget(this.key(batchId, 'lines'), String(index));
    return text ? (JSON.parse(text) as BatchLine) : undefined;
  }

  async settled(batchId: string, index: number): Promise<boolean> {
    return (await this.redis.hexists(this.key(batchId, 'settled'), String(index))) === 1;
  }

  async started(batchId: string): Promise<void> {
    const batch = await this.info(batchId);
    if (batch?.status === 'validating') await this.setStatus(batchId, 'in_progress');
  }

  async record(batchId: string, index: number, outcome: LineOutcome): Promise<{ recorded: boolean; finished: boolean }> {
    return this.settle(batchId, index, { index, outcome });
  }

  async skip(batchId: string, indexes: readonly number[], reason: 'cancelled' | 'expired'): Promise<{ finished: boolean }> {
    let finished = false;
    for (const index of indexes) finished = (await this.settle(batchId, index, { index, skipped: reason })).finished || finished;
    return { finished };
  }

  /** Every settled line, by index. */
  async results(batchId: string): Promise<Settled[]> {
    const all = await this.redis.hgetall(this.key(batchId, 'settled'));
    return Object.values(all)
      .map((text) => JSON.parse(text) as Settled)
      .sort((a, b) => a.index - b.index);
  }

  async close(): Promise<void> {
    await this.redis.quit();
  }

  private async settle(batchId: string, index: number, settled: Settled): Promise<{ recorded: boolean; finished: boolean }> {
    const call = `${batchId}/${index}`;
    this.calls.set(call, (this.calls.get(call) ?? 0) + 1);
    const key = this.key(batchId, 'settled');
    const [[, added], [, count]] = (await this.redis.multi().hsetnx(key, String(index), JSON.stringify(settled)).hlen(key).exec()) as [
      [null, number],
      [null, number],
    ];
    const batch = await this.info(batchId);
    const finished = added === 1 && batch !== undefined && count === batch.total;
    if (finished) await this.setStatus(batchId, batch.status === 'cancelling' ? 'cancelled' : 'completed');
    return { recorded: added === 1, finished };
  }

  private key(batchId: string, part?: string): string {
    return `${this.prefix}stand-in:${batchId}${part ? `:${part}` : ''}`;
  }
}

/** One request the lane sent to the stand-in listener. */
export interface Received {
  at: number;
  path: string;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
  requestId: string;
}

/** How the stand-in listener answers a request: status, headers and JSON body, after `delayMs`; or `hang` / `reset`. */
export type Reply = { status: number; headers?: Record<string, string>; body?: unknown; delayMs?: number } | 'hang' | 'reset';

/** An HTTP server where the gateway's listener would be; `reply` decides each answer (default 200). */
export class StandInListener {
  readonly received: Received[] = [];
  reply: (request: Received) => Reply = () => ({ status: 200 });
  private readonly server: Server;
  url = '';

  constructor() {
    this.server = createServer((req, res) => void this.handle(req, res));
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** The requests of one batch, in arrival order. */
  of(batchId: string): Received[] {
    return this.received.filter((request) => request.requestId.startsWith(`${batchId}_`));
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const request: Received = {
      at: Date.now(),
      path: req.url ?? '',
      headers: req.headers,
      body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>,
      requestId: String(req.headers['x-request-id']),
    };
    this.received.push(request);
    const reply = this.reply(request);
    if (reply === 'hang') return;
    if (reply === 'reset') return void req.socket.destroy();
    // Unref'd: a reply still waiting does not keep the test process alive after its test.
    if (reply.delayMs) await new Promise((resolve) => setTimeout(resolve, reply.delayMs).unref());
    if (res.destroyed) return;
    res.writeHead(reply.status, { 'content-type': 'application/json', 'x-request-id': request.requestId, ...reply.headers });
    res.end(JSON.stringify(reply.body ?? { id: request.requestId, object: 'chat.completion', echo: request.body.messages }));
  }
}
