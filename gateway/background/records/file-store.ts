/**
 * Files of the Batch API in Redis: uploads (reserved in the byte budget, then stored or abandoned),
 * lookups, a client's lists, content as a stream (an input file's bytes as uploaded; an output or
 * error file straight from its batch's results, in input order), and deletion.
 */
import type { Cluster, Redis } from 'ioredis';
import { newFileId } from './ids.ts';
import { reservationOf, type BatchKeys, type FilePurpose } from './keys.ts';
import { readPage, type Page } from './lists.ts';
import { numbers, type BatchScripts } from './lua-scripts.ts';
import { fileFromHash, type FileRecord } from './shapes.ts';
import { Upload, UPLOAD_TTL_MS } from './upload.ts';

/** Result lines read per command when an output or error file is streamed. */
const RESULT_LINES_PER_READ = 500;
/** Expired holders the byte budget forgets per upload (the rest at the next ones). */
const REAP_PER_UPLOAD = 1000;

export interface FileStoreOptions {
  redis: Redis | Cluster;
  scripts: BatchScripts;
  keys: BatchKeys;
  retentionMs: number;
  storeBytes: number;
  now: () => number;
}

export type Reservation = { ok: true; upload: Upload } | { ok: false; usedBytes: number; storeBytes: number };
export type DeleteOutcome = { deleted: true } | { deleted: false; inputOf?: string };

export class FileStore {
  readonly #options: FileStoreOptions;

  constructor(options: FileStoreOptions) {
    this.#options = options;
  }

  /**
   * Room for an upload of at most `bytes` (its Content-Length, or the file limit when unknown), taken
   * before it is read; refused when the budget cannot hold it, after the bytes of expired files left it.
   */
  async reserve(bytes: number): Promise<Reservation> {
    const { scripts, keys, storeBytes, now } = this.#options;
    const fileId = newFileId();
    const at = now();
    const reply = await scripts.run('reserve-upload', keys.store, [
      at,
      reservationOf(fileId),
      bytes,
      at + UPLOAD_TTL_MS,
      storeBytes,
      REAP_PER_UPLOAD,
    ]);
    const [reserved = 0, used = 0] = numbers(reply);
    if (reserved !== 1) return { ok: false, usedBytes: used, storeBytes };
    return { ok: true, upload: new Upload(this.#options, fileId, bytes) };
  }

  async get(id: string): Promise<FileRecord | undefined> {
    return fileFromHash(await this.#options.redis.hgetall(this.#options.keys.file(id)));
  }

  /** The client's files, newest first unless `order` says otherwise; one purpose, or both. */
  async list(
    client: string,
    purpose: FilePurpose | undefined,
    limit: number,
    after: string | undefined,
    order: 'asc' | 'desc',
  ): Promise<Page<FileRecord>> {
    const { keys, redis } = this.#options;
    const purposes: FilePurpose[] = purpose ? [purpose] : ['batch', 'batch_output'];
    let afterSeq: number | undefined;
    if (after !== undefined) {
      const cursor = await this.get(after);
      // A cursor that names no file of this client's starts no page.
      if (!cursor || cursor.client !== client) return { data: [], hasMore: false };
      afterSeq = cursor.seq;
    }
    const lists = purposes.map((p) => keys.clientFiles(client, p));
    return readPage(redis, lists, { limit, afterSeq, order }, (id) => this.get(id));
  }

  /**
   * The file's content, chunk by chunk. An input file is its bytes as uploaded; an output or error file
   * is its batch's results of that kind, one line per request in input order. Throws when the content
   * disappears while it is read (deleted, expired): the answer is then cut, not silently short.
   */
  async *content(file: FileRecord): AsyncGenerator<Buffer> {
    const { redis, keys } = this.#options;
    if (file.kind === 'input') {
      let sent = 0;
      for (let chunk = 0; chunk < file.chunks; chunk++) {
        const part = await redis.getBuffer(keys.fileChunk(file.id, chunk));
        if (!part) throw new Error(`file ${file.id}: its content is gone`);
        sent += part.length;
        yield part;
      }
      if (sent !== file.bytes) throw new Error(`file ${file.id}: ${sent} of its ${file.bytes} bytes were found`);
      return;
    }
    const batchId = file.batchId!;
    const total = Number(await redis.hget(keys.batch(batchId), 'total'));
    if (!Number.isFinite(total)) throw new Error(`file ${file.id}: its batch is gone`);
    const key = keys.results(batchId, file.kind);
    let sent = 0;
    for (let start = 0; start < total; start += RESULT_LINES_PER_READ) {
      const indexes = Array.from({ length: Math.min(RESULT_LINES_PER_READ, total - start) }, (_, i) => start + i);
      const lines = (await redis.hmgetBuffer(key, ...indexes.map(String))).filter((line): line is Buffer => line !== null);
      sent += lines.length;
      if (lines.length > 0) yield Buffer.concat(lines.flatMap((line) => [line, NEWLINE]));
    }
    if (sent !== file.lines) throw new Error(`file ${file.id}: ${file.lines - sent} of its lines are gone`);
  }

  /** Deletes the file and frees its bytes; an input file a running batch reads is kept (`inputOf`). */
  async delete(file: FileRecord): Promise<DeleteOutcome> {
    const { keys, scripts } = this.#options;
    const content = file.kind === 'input' ? keys.fileContent(file.id, file.chunks) : [keys.results(file.batchId!, file.kind)];
    const reply = (await scripts.run(
      'delete-file',
      [...keys.store, keys.file(file.id), keys.clientFiles(file.client, file.purpose), ...content],
      [file.id],
    )) as [number, string?];
    const code = Number(reply[0]);
    if (code === 1) return { deleted: true };
    return code === -1 ? { deleted: false, inputOf: String(reply[1] ?? '') } : { deleted: false };
  }

  /** Bytes the store holds now (files, results, reservations), as counted; for operators and tests. */
  async usedBytes(): Promise<number> {
    return Number((await this.#options.redis.get(this.#options.keys.storeBytes)) ?? 0);
  }
}

const NEWLINE = Buffer.from('\n');
