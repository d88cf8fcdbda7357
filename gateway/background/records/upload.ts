/**
 * One upload on its way into the store: a reservation in the byte budget (taken before a byte is
 * read), the bytes written to Redis in chunks of CHUNK_BYTES as they arrive while every line is
 * checked, and then either the file (commit: its metadata makes it one) or nothing at all (abandon: a
 * bad file, a limit, a client gone). Nothing of a refused upload stays: its reservation is released
 * and what it wrote deleted; an instance that dies mid-way leaves keys and a reservation that expire
 * after UPLOAD_TTL_MS.
 */
import type { Cluster, Redis } from 'ioredis';
import { JsonlSplitter, type JsonlLine } from './jsonl-lines.ts';
import { CHUNK_BYTES, reservationOf, type BatchKeys } from './keys.ts';
import type { BatchFileCheck, CheckResult, FileSummary } from './line-check.ts';
import { numbers, type BatchScripts } from './lua-scripts.ts';
import { fileHash, type FileRecord } from './shapes.ts';

/** How long an upload's keys and reservation outlive an instance that died while receiving it. */
export const UPLOAD_TTL_MS = 10 * 60_000;

export interface UploadStore {
  redis: Redis | Cluster;
  scripts: BatchScripts;
  keys: BatchKeys;
  retentionMs: number;
  now: () => number;
}

export class Upload {
  readonly fileId: string;
  /** Bytes reserved in the budget for it. */
  readonly reserved: number;
  readonly #store: UploadStore;
  /** Chunks written (or being written) so far. */
  #chunks = 0;
  #indexWritten = false;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #offsets: number[] = [];
  #lengths: number[] = [];
  #bytes = 0;
  #done = false;

  constructor(store: UploadStore, fileId: string, reserved: number) {
    this.#store = store;
    this.fileId = fileId;
    this.reserved = reserved;
  }

  /** File bytes received so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Reads the file to its end, checking every line; its bytes go to Redis as long as no problem was
   * found (after one, the file will be refused: the rest is only checked, for the answer's list).
   */
  async receive(chunks: AsyncIterable<Buffer>, check: BatchFileCheck): Promise<CheckResult> {
    const splitter = new JsonlSplitter(check.maxLineBytes);
    const take = (line: JsonlLine) => {
      if (check.check(line) !== 'request') return;
      this.#offsets.push(line.offset);
      this.#lengths.push(line.length);
    };
    for await (const chunk of chunks) {
      for (const line of splitter.push(chunk)) take(line);
      this.#bytes = splitter.bytes;
      if (check.failed) continue;
      this.#pending.push(chunk);
      this.#pendingBytes += chunk.length;
      if (this.#pendingBytes >= CHUNK_BYTES) await this.#flush(false);
    }
    for (const line of splitter.end()) take(line);
    const result = check.result();
    if (result.ok) {
      await this.#flush(true);
      this.#indexWritten = true;
      await this.#store.redis.set(this.#store.keys.fileIndex(this.fileId), this.#lineIndex(), 'PX', UPLOAD_TTL_MS);
    }
    return result;
  }

  /** Stores the received file under its id; the reservation becomes its size. */
  async commit(client: string, filename: string, summary: FileSummary): Promise<FileRecord> {
    const { keys, scripts, retentionMs } = this.#store;
    const createdAt = this.#store.now();
    const file: Omit<FileRecord, 'seq'> = {
      id: this.fileId,
      client,
      purpose: 'batch',
      kind: 'input',
      filename,
      bytes: this.#bytes,
      lines: summary.requests,
      chunks: this.#chunks,
      createdAt,
      expiresAt: createdAt + retentionMs,
      pool: summary.pool,
      endpoint: summary.endpoint,
    };
    const id = this.fileId;
    const reply = await scripts.run(
      'commit-upload',
      [...keys.store, keys.file(id), keys.clientFiles(client, 'batch'), keys.seq, ...keys.fileContent(id, this.#chunks)],
      [createdAt, reservationOf(id), id, file.bytes, file.expiresAt, ...fileHash(file)],
    );
    this.#done = true;
    const [stored = 0, seq = 0] = numbers(reply);
    if (stored !== 1) throw new Error(`upload ${id}: its data expired before it was stored`);
    return { ...file, seq };
  }

  /** Releases the reservation and deletes what was written; safe to call more than once, and after commit. */
  async abandon(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    const { keys, scripts } = this.#store;
    const content = keys.fileContent(this.fileId, this.#chunks);
    const written = this.#indexWritten ? content : content.slice(1);
    await scripts.run('release-upload', [...keys.store, ...written], [reservationOf(this.fileId)]);
  }

  /** Writes the whole chunks pending; at the end (`last`), the rest too. */
  async #flush(last: boolean): Promise<void> {
    if (this.#pendingBytes === 0) return;
    let data = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending, this.#pendingBytes);
    while (data.length >= CHUNK_BYTES || (last && data.length > 0)) {
      const chunk = data.subarray(0, CHUNK_BYTES);
      // Counted before the write: an abandon deletes a chunk whose write failed half-way too.
      const key = this.#store.keys.fileChunk(this.fileId, this.#chunks++);
      await this.#store.redis.set(key, chunk, 'PX', UPLOAD_TTL_MS);
      data = data.subarray(chunk.length);
    }
    this.#pending = data.length > 0 ? [data] : [];
    this.#pendingBytes = data.length;
  }

  /** 8 bytes per request: its offset and length in the file, big-endian. */
  #lineIndex(): Buffer {
    const index = Buffer.alloc(this.#offsets.length * 8);
    for (let i = 0; i < this.#offsets.length; i++) {
      index.writeUInt32BE(this.#offsets[i]!, i * 8);
      index.writeUInt32BE(this.#lengths[i]!, i * 8 + 4);
    }
    return index;
  }
}
