/**
 * Reads one request line of an input file: its offset and length from the file's line index (8 bytes
 * per request, kept in memory once read: it never changes), then just its bytes from the one or few
 * chunks it lies in (GETRANGE, in one round trip).
 */
import type { Cluster, Redis } from 'ioredis';
import { CHUNK_BYTES, type BatchKeys } from './keys.ts';

/** Line indexes kept in memory, in bytes (8 per request: 400 KB for a 50 000-line file). */
const INDEX_CACHE_BYTES = 16 * 1024 * 1024;

export class LineReader {
  readonly #redis: Redis | Cluster;
  readonly #keys: BatchKeys;
  /** File id -> its line index (a promise, so that concurrent first reads fetch it once). */
  readonly #indexes = new Map<string, Promise<Buffer | null>>();
  readonly #sizes = new Map<string, number>();
  #cachedBytes = 0;

  constructor(redis: Redis | Cluster, keys: BatchKeys) {
    this.#redis = redis;
    this.#keys = keys;
  }

  /** The line's bytes; undefined when the file has no such request (or is gone). */
  async read(fileId: string, index: number): Promise<Buffer | undefined> {
    const lineIndex = await this.#index(fileId);
    if (!lineIndex || (index + 1) * 8 > lineIndex.length) return undefined;
    const offset = lineIndex.readUInt32BE(index * 8);
    const length = lineIndex.readUInt32BE(index * 8 + 4);
    const end = offset + length;
    const reads: Promise<Buffer>[] = [];
    for (let chunk = Math.floor(offset / CHUNK_BYTES); chunk * CHUNK_BYTES < end; chunk++) {
      const base = chunk * CHUNK_BYTES;
      const from = Math.max(offset, base) - base;
      const to = Math.min(end, base + CHUNK_BYTES) - base - 1;
      reads.push(this.#redis.getrangeBuffer(this.#keys.fileChunk(fileId, chunk), from, to));
    }
    const parts = await Promise.all(reads);
    const line = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    return line.length === length && length > 0 ? line : undefined;
  }

  async #index(fileId: string): Promise<Buffer | null> {
    const cached = this.#indexes.get(fileId);
    if (cached) return cached;
    const loading = this.#redis.getBuffer(this.#keys.fileIndex(fileId));
    this.#indexes.set(fileId, loading);
    let index: Buffer | null;
    try {
      index = await loading;
    } catch (error) {
      this.#indexes.delete(fileId);
      throw error;
    }
    // A file not found is not remembered: it may be one being stored right now.
    if (!index) this.#indexes.delete(fileId);
    else this.#remember(fileId, index.length);
    return index;
  }

  /** Counts a cached index, dropping the oldest ones past the cache's size. */
  #remember(fileId: string, bytes: number): void {
    this.#sizes.set(fileId, bytes);
    this.#cachedBytes += bytes;
    for (const [oldest, size] of this.#sizes) {
      if (this.#cachedBytes <= INDEX_CACHE_BYTES || oldest === fileId) break;
      this.#sizes.delete(oldest);
      this.#indexes.delete(oldest);
      this.#cachedBytes -= size;
    }
  }
}
