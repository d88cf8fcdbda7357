/**
 * What the Batch API's records (files, batches, results: batch-records.ts, Redis) and the lane that runs
 * the lines (BullMQ: lane.ts) promise each other. Routes create and read records; the lane reads lines and
 * records one outcome per line; the records finalise the batch when its last line is accounted for.
 */

/** The endpoints a batch may run, as OpenAI names them (Azure's `/chat/completions` style is normalised to these). */
export type BatchEndpoint = '/v1/chat/completions' | '/v1/embeddings' | '/v1/responses';

/** OpenAI's batch statuses. */
export type BatchStatus = 'validating' | 'failed' | 'in_progress' | 'finalizing' | 'completed' | 'expired' | 'cancelling' | 'cancelled';

/** What the lane needs to know about a batch. */
export interface BatchInfo {
  id: string;
  /** The client that created it (its configured name): its quota applies to every line. */
  client: string;
  /** Every line's `body.model`: the pool the lines run on (one per batch, checked at upload). */
  pool: string;
  endpoint: BatchEndpoint;
  /** Lines in the input file. */
  total: number;
  status: BatchStatus;
  /** Epoch ms; the completion window ends then: lines not run by then are recorded as `batch_expired`. */
  expiresAt: number;
  createdAt: number;
}

/** One request line of an input file, validated at upload. */
export interface BatchLine {
  /** 0-based position in the input file. */
  index: number;
  customId: string;
  /** The request body as JSON text; its `model` names the pool. */
  body: string;
}

/** How a line ended. */
export type LineOutcome =
  /** An answer from the pool: 2xx goes to the output file, any other status to the error file. */
  | { kind: 'response'; statusCode: number; requestId: string; body: unknown }
  /** No answer (never sent, or none came): the error file, with `response: null`. */
  | { kind: 'error'; code: string; message: string };

export interface BatchRecords {
  /** The batch, or undefined when unknown (or past retention). */
  info(batchId: string): Promise<BatchInfo | undefined>;
  /** A line of the batch's input file; undefined when there is no such line. */
  line(batchId: string, index: number): Promise<BatchLine | undefined>;
  /** True when the line has an outcome already (recorded or skipped). */
  settled(batchId: string, index: number): Promise<boolean>;
  /** The lane took the batch on: `validating` → `in_progress` (no-op in any other status). */
  started(batchId: string): Promise<void>;
  /**
   * The line's outcome. Only a line's first outcome is kept, later ones are dropped (a line run again after
   * its instance died), so no custom_id appears twice in the results. When this settles the batch's last
   * line the batch is finalised in the same step (`finished`).
   */
  record(batchId: string, index: number, outcome: LineOutcome): Promise<{ recorded: boolean; finished: boolean }>;
  /**
   * Lines that will not run: `cancelled` ones leave no result line; `expired` ones get a `batch_expired`
   * line in the error file. Idempotent per line, like `record`; finalises the batch when it settles the last line.
   */
  skip(batchId: string, indexes: readonly number[], reason: 'cancelled' | 'expired'): Promise<{ finished: boolean }>;
}

export interface BatchLane {
  /** Queue a validated batch's lines, durably: once this resolves, the lines run even if this instance dies. */
  submit(batch: BatchInfo): Promise<void>;
  /** Stop a batch (already marked `cancelling`): lines not started are skipped; lines running finish. */
  cancel(batchId: string): Promise<void>;
}
