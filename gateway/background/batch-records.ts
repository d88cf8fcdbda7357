/**
 * The Batch API's records in Redis: files (input files as uploaded, checked line by line; output and
 * error files read from their batch's results), batches, and each line's outcome. The routes
 * (gateway/http/batch-routes.ts) use the stores; the lane (lane.ts) uses BatchRecords (contract.ts).
 * Key layout in records/keys.ts, scripts with their KEYS/ARGV in lua/.
 *
 * Retention: an input file, and a batch with its results, are kept `background.retentionMs` (a file
 * from its upload, at least to the end of the completion window of a batch that reads it; a batch from
 * the end of its completion window). The byte budget `background.storeBytes` counts files' and
 * results' bytes; an upload that would go past it is refused, nothing is ever evicted.
 */
import type { Cluster, Redis } from 'ioredis';
import { DEFAULT_KEY_PREFIX } from '../../shared/store/constants.ts';
import type { BackgroundSettings } from '../../shared/config/schema.ts';
import type { BatchInfo, BatchLine, BatchRecords, LineOutcome } from './contract.ts';
import { BatchStore } from './records/batch-store.ts';
import { FileStore } from './records/file-store.ts';
import { BatchKeys } from './records/keys.ts';
import { BatchScripts } from './records/lua-scripts.ts';

/** What the routes need besides BatchRecords: the two stores. */
export interface BatchStorage {
  readonly files: FileStore;
  readonly batches: BatchStore;
}

export interface BatchRecordsOptions {
  /** Prefix of every key (tests use one per test); the store's default otherwise. */
  keyPrefix?: string;
  /** Epoch ms; tests may move it. */
  now?: () => number;
}

export function createBatchRecords(
  redis: Redis | Cluster,
  settings: BackgroundSettings,
  options: BatchRecordsOptions = {},
): BatchRecords & BatchStorage {
  const keys = new BatchKeys(options.keyPrefix ?? DEFAULT_KEY_PREFIX);
  const scripts = new BatchScripts(redis);
  const now = options.now ?? Date.now;
  const common = { redis, scripts, keys, retentionMs: settings.retentionMs, now };
  const files = new FileStore({ ...common, storeBytes: settings.storeBytes });
  const batches = new BatchStore(common);
  return {
    files,
    batches,
    async info(batchId: string): Promise<BatchInfo | undefined> {
      const batch = await batches.get(batchId);
      if (!batch) return undefined;
      const { id, client, pool, endpoint, total, status, expiresAt, createdAt } = batch;
      return { id, client, pool, endpoint, total, status, expiresAt, createdAt };
    },
    line: (batchId: string, index: number): Promise<BatchLine | undefined> => batches.line(batchId, index),
    settled: (batchId: string, index: number) => batches.settled(batchId, index),
    async started(batchId: string): Promise<void> {
      await batches.start(batchId);
    },
    record: (batchId: string, index: number, outcome: LineOutcome) => batches.record(batchId, index, outcome),
    skip: (batchId: string, indexes: readonly number[], reason: 'cancelled' | 'expired') => batches.skip(batchId, indexes, reason),
  };
}
