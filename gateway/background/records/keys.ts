/**
 * Redis keys of the Batch API. Every key carries the one hash tag `{batches}`, so each script may
 * touch any of them on Redis Cluster (they all live in one slot: the Batch API's records are small
 * next to what one node holds, and its scripts are not on the interactive path). Client names are
 * URI-encoded so that `:` `{` `}` in them cannot make two keys collide.
 *
 *   PREFIX{batches}:store:bytes          bytes held by files and results (string)
 *   PREFIX{batches}:store:sizes          HASH holder -> bytes (file id, upload:<file id> reservation)
 *   PREFIX{batches}:store:expiry         ZSET holder -> expiry (epoch ms): reaped from the count at upload
 *   PREFIX{batches}:seq                  sequence of creations: the order of the lists (string, INCR)
 *   PREFIX{batches}:file:ID              file metadata HASH (input, output or error file); an input file's
 *                                        keys below exist before it (while it is uploaded), but it is a
 *                                        file only once this hash is written
 *   PREFIX{batches}:file:ID:data:N       an input file's bytes as uploaded, in chunks of CHUNK_BYTES (strings)
 *   PREFIX{batches}:file:ID:index        an input file's requests: 8 bytes each, offset and length (string)
 *   PREFIX{batches}:batch:ID             batch HASH
 *   PREFIX{batches}:batch:ID:settled     bitmap of the lines with an outcome
 *   PREFIX{batches}:batch:ID:out         HASH line index -> output line (2xx answers)
 *   PREFIX{batches}:batch:ID:err         HASH line index -> error line
 *   PREFIX{batches}:client:NAME:files:PURPOSE   ZSET file id -> sequence (purposes batch, batch_output)
 *   PREFIX{batches}:client:NAME:batches         ZSET batch id -> sequence
 */

export type FilePurpose = 'batch' | 'batch_output';

/**
 * Bytes of an input file per key. 64 KiB less the string's own header (9 bytes) and terminator, so
 * each chunk fills one 64 KiB allocation exactly: a file costs its size plus about 0.2 %, where one
 * string grown by APPEND kept up to twice its size (Redis grows a string ahead, jemalloc rounds up).
 */
export const CHUNK_BYTES = 64 * 1024 - 10;

export class BatchKeys {
  readonly #base: string;

  constructor(prefix: string) {
    this.#base = `${prefix}{batches}:`;
  }

  get storeBytes(): string {
    return `${this.#base}store:bytes`;
  }

  get storeSizes(): string {
    return `${this.#base}store:sizes`;
  }

  get storeExpiry(): string {
    return `${this.#base}store:expiry`;
  }

  /** The three keys of the byte budget, in the order the scripts take them. */
  get store(): [string, string, string] {
    return [this.storeBytes, this.storeSizes, this.storeExpiry];
  }

  get seq(): string {
    return `${this.#base}seq`;
  }

  file(id: string): string {
    return `${this.#base}file:${id}`;
  }

  fileIndex(id: string): string {
    return `${this.file(id)}:index`;
  }

  fileChunk(id: string, chunk: number): string {
    return `${this.file(id)}:data:${chunk}`;
  }

  /** An input file's content keys: its line index, then its chunks in order. */
  fileContent(id: string, chunks: number): string[] {
    return [this.fileIndex(id), ...Array.from({ length: chunks }, (_, chunk) => this.fileChunk(id, chunk))];
  }

  batch(id: string): string {
    return `${this.#base}batch:${id}`;
  }

  settled(batchId: string): string {
    return `${this.batch(batchId)}:settled`;
  }

  results(batchId: string, kind: 'output' | 'error'): string {
    return `${this.batch(batchId)}:${kind === 'output' ? 'out' : 'err'}`;
  }

  clientFiles(client: string, purpose: FilePurpose): string {
    return `${this.#base}client:${encodeURIComponent(client)}:files:${purpose}`;
  }

  clientBatches(client: string): string {
    return `${this.#base}client:${encodeURIComponent(client)}:batches`;
  }
}

/** The holder name of an upload's reservation in the byte budget. */
export function reservationOf(fileId: string): string {
  return `upload:${fileId}`;
}
