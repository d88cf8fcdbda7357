/**
 * Batches of the Batch API in Redis: creation over a stored input file, lookups and a client's list,
 * status changes (started, cancelling, failed), the lines the lane reads, and each line's outcome
 * (settle.lua: first outcome kept, the batch finalised with its last line).
 */
import type { Cluster, Redis } from 'ioredis';
import type { BatchEndpoint, BatchLine, LineOutcome } from '../contract.ts';
import { newBatchId, newFileId, newResultId } from './ids.ts';
import type { BatchKeys } from './keys.ts';
import { LineReader } from './line-reader.ts';
import { readPage, type Page } from './lists.ts';
import { numbers, type BatchScripts } from './lua-scripts.ts';
import { batchFromHash, type BatchError, type BatchRecord, type FileRecord } from './shapes.ts';

/** OpenAI's only completion window. */
export const COMPLETION_WINDOW = '24h';
const COMPLETION_WINDOW_MS = 24 * 60 * 60_000;
/** Lines settled per script call (skip of a whole batch). */
const LINES_PER_SETTLE = 500;
/** Batches whose unchanging fields are kept in memory (the lane asks for their lines over and over). */
const CACHED_BATCHES = 10_000;

const EXPIRED_MESSAGE = 'This request could not be executed before the completion window expired.';
const ENDED: ReadonlySet<string> = new Set(['completed', 'expired', 'cancelled', 'failed']);

export interface BatchStoreOptions {
  redis: Redis | Cluster;
  scripts: BatchScripts;
  keys: BatchKeys;
  retentionMs: number;
  now: () => number;
}

export interface NewBatch {
  client: string;
  file: FileRecord;
  endpoint: BatchEndpoint;
  endpointShown: string;
  metadata: Record<string, string> | null;
}

/** What never changes about a batch: enough to find its keys. */
interface BatchFrame {
  client: string;
  inputFileId: string;
  total: number;
  outId: string;
  errId: string;
}

type SettleKind = 'ok' | 'error' | 'expired' | 'cancelled';

export type TransitionOutcome = 'moved' | 'already' | 'refused' | 'missing';

export class BatchStore {
  readonly #options: BatchStoreOptions;
  readonly #frames = new Map<string, BatchFrame>();
  readonly #lines: LineReader;

  constructor(options: BatchStoreOptions) {
    this.#options = options;
    this.#lines = new LineReader(options.redis, options.keys);
  }

  /** A batch in status validating over the file; undefined when the file went away meanwhile. */
  async create(input: NewBatch): Promise<BatchRecord | undefined> {
    const { keys, scripts, retentionMs, now } = this.#options;
    const id = newBatchId();
    const createdAt = now();
    const expiresAt = createdAt + COMPLETION_WINDOW_MS;
    const dropAt = expiresAt + retentionMs;
    const { file } = input;
    const fields: Record<string, string | number> = {
      id,
      client: input.client,
      pool: file.pool!,
      endpoint: input.endpoint,
      endpointShown: input.endpointShown,
      inputFileId: file.id,
      completionWindow: COMPLETION_WINDOW,
      status: 'validating',
      total: file.lines,
      completed: 0,
      failed: 0,
      settled: 0,
      createdAt,
      expiresAt,
      dropAt,
      outId: newFileId(),
      errId: newFileId(),
      ...(input.metadata ? { metadata: JSON.stringify(input.metadata) } : {}),
    };
    const reply = await scripts.run(
      'create-batch',
      [
        keys.file(file.id),
        keys.batch(id),
        keys.clientBatches(input.client),
        keys.seq,
        keys.storeSizes,
        keys.storeExpiry,
        ...keys.fileContent(file.id, file.chunks),
      ],
      [createdAt, id, expiresAt, dropAt, fields.outId!, fields.errId!, ...Object.entries(fields).flat()],
    );
    const [created = 0] = numbers(reply);
    if (created !== 1) return undefined;
    return this.get(id);
  }

  async get(id: string): Promise<BatchRecord | undefined> {
    return batchFromHash(await this.#options.redis.hgetall(this.#options.keys.batch(id)));
  }

  /** The client's batches, newest first (as OpenAI lists them). */
  async list(client: string, limit: number, after: string | undefined): Promise<Page<BatchRecord>> {
    let afterSeq: number | undefined;
    if (after !== undefined) {
      const cursor = await this.get(after);
      if (!cursor || cursor.client !== client) return { data: [], hasMore: false };
      afterSeq = cursor.seq;
    }
    const { redis, keys } = this.#options;
    return readPage(redis, [keys.clientBatches(client)], { limit, afterSeq, order: 'desc' }, (id) => this.get(id));
  }

  /** validating → in_progress (the lane took it on); any other status is left alone. */
  async start(id: string): Promise<TransitionOutcome> {
    return this.#transition(id, 'in_progress', 'inProgressAt', ['validating']);
  }

  /** A batch not ended → cancelling; `already` when it is cancelling, `refused` when it has ended. */
  async markCancelling(id: string): Promise<TransitionOutcome> {
    return this.#transition(id, 'cancelling', 'cancellingAt', ['validating', 'in_progress', 'finalizing']);
  }

  /** A batch that could not be queued → failed, with why; its input file is free again. */
  async markFailed(id: string, error: Omit<BatchError, 'line' | 'param'>): Promise<TransitionOutcome> {
    const errors: BatchError[] = [{ ...error, line: null, param: null }];
    return this.#transition(id, 'failed', 'failedAt', ['validating', 'in_progress'], JSON.stringify(errors), true);
  }

  /** A request line of the batch's input file; undefined when there is no such line (or batch). */
  async line(batchId: string, index: number): Promise<BatchLine | undefined> {
    if (!Number.isInteger(index) || index < 0) return undefined;
    const frame = await this.#frame(batchId);
    if (!frame || index >= frame.total) return undefined;
    const raw = await this.#lines.read(frame.inputFileId, index);
    if (!raw) return undefined;
    // Checked at upload: a JSON object with a string custom_id and an object body.
    const request = JSON.parse(raw.toString('utf8')) as { custom_id: string; body: unknown };
    return { index, customId: request.custom_id, body: JSON.stringify(request.body) };
  }

  async settled(batchId: string, index: number): Promise<boolean> {
    if (!Number.isInteger(index) || index < 0) return false;
    return (await this.#options.redis.getbit(this.#options.keys.settled(batchId), index)) === 1;
  }

  /** The line's outcome, kept only when it is the line's first (see contract.ts). */
  async record(batchId: string, index: number, outcome: LineOutcome): Promise<{ recorded: boolean; finished: boolean }> {
    const frame = await this.#frame(batchId);
    if (!frame || !Number.isInteger(index) || index < 0 || index >= frame.total) return { recorded: false, finished: false };
    const customId = (await this.line(batchId, index))?.customId ?? null;
    const ok = outcome.kind === 'response' && outcome.statusCode >= 200 && outcome.statusCode < 300;
    const line =
      outcome.kind === 'response'
        ? {
            id: newResultId(),
            custom_id: customId,
            response: { status_code: outcome.statusCode, request_id: outcome.requestId, body: outcome.body },
            error: null,
          }
        : { id: newResultId(), custom_id: customId, response: null, error: { code: outcome.code, message: outcome.message } };
    const { settled, finished } = await this.#settle(batchId, frame, [[index, ok ? 'ok' : 'error', JSON.stringify(line)]]);
    return { recorded: settled === 1, finished };
  }

  /** Lines that will not run: cancelled ones leave no result, expired ones a `batch_expired` error line. */
  async skip(batchId: string, indexes: readonly number[], reason: 'cancelled' | 'expired'): Promise<{ finished: boolean }> {
    const frame = await this.#frame(batchId);
    if (!frame) return { finished: false };
    const valid = [...new Set(indexes)].filter((index) => Number.isInteger(index) && index >= 0 && index < frame.total);
    let finished = false;
    for (let start = 0; start < valid.length; start += LINES_PER_SETTLE) {
      const chunk = valid.slice(start, start + LINES_PER_SETTLE);
      const entries: [number, SettleKind, string][] =
        reason === 'cancelled'
          ? chunk.map((index) => [index, 'cancelled', ''])
          : await Promise.all(
              chunk.map(async (index): Promise<[number, SettleKind, string]> => {
                const customId = (await this.line(batchId, index))?.customId ?? null;
                const line = {
                  id: newResultId(),
                  custom_id: customId,
                  response: null,
                  error: { code: 'batch_expired', message: EXPIRED_MESSAGE },
                };
                return [index, 'expired', JSON.stringify(line)];
              }),
            );
      if ((await this.#settle(batchId, frame, entries)).finished) finished = true;
    }
    return { finished };
  }

  async #settle(
    batchId: string,
    frame: BatchFrame,
    entries: [number, SettleKind, string][],
  ): Promise<{ settled: number; finished: boolean }> {
    const { keys, scripts, now } = this.#options;
    const reply = await scripts.run(
      'settle',
      [
        keys.batch(batchId),
        keys.settled(batchId),
        keys.results(batchId, 'output'),
        keys.results(batchId, 'error'),
        ...keys.store,
        keys.file(frame.outId),
        keys.file(frame.errId),
        keys.file(frame.inputFileId),
        keys.clientFiles(frame.client, 'batch_output'),
        keys.seq,
      ],
      [now(), ...entries.flat()],
    );
    const [settled = 0, finished = 0] = numbers(reply);
    return { settled, finished: finished === 1 };
  }

  async #transition(id: string, to: string, stamp: string, from: string[], errors = '', ends = false): Promise<TransitionOutcome> {
    const { keys, scripts, redis, now } = this.#options;
    const inputFileId = (await this.#frame(id))?.inputFileId ?? (await redis.hget(keys.batch(id), 'inputFileId')) ?? '';
    const reply = (await scripts.run(
      'transition',
      [keys.batch(id), keys.file(inputFileId)],
      [to, stamp, now(), from.join(','), errors, ends ? 1 : 0],
    )) as unknown[];
    const code = Number(reply[0]);
    return code === 1 ? 'moved' : code === 2 ? 'already' : code === -1 ? 'refused' : 'missing';
  }

  async #frame(batchId: string): Promise<BatchFrame | undefined> {
    const cached = this.#frames.get(batchId);
    if (cached) return cached;
    const values = await this.#options.redis.hmget(this.#options.keys.batch(batchId), 'client', 'inputFileId', 'total', 'outId', 'errId');
    const [client, inputFileId, total, outId, errId] = values;
    if (!client || !inputFileId || !total || !outId || !errId) return undefined;
    const frame: BatchFrame = { client, inputFileId, total: Number(total), outId, errId };
    if (this.#frames.size >= CACHED_BATCHES) this.#frames.clear();
    this.#frames.set(batchId, frame);
    return frame;
  }
}

/** True for the statuses a batch ends in. */
export function hasEnded(status: string): boolean {
  return ENDED.has(status);
}
