/**
 * The records as stored (Redis hashes of strings) and as clients see them: OpenAI's file and batch
 * objects, field for field (times in seconds, absent times null), which the openai SDK parses.
 */
import type { BatchEndpoint, BatchStatus } from '../contract.ts';
import type { FilePurpose } from './keys.ts';

export type FileKind = 'input' | 'output' | 'error';

export interface FileRecord {
  id: string;
  client: string;
  purpose: FilePurpose;
  kind: FileKind;
  filename: string;
  bytes: number;
  /** Request lines (input), result lines (output, error). */
  lines: number;
  /** Input files: the keys its bytes are kept in (CHUNK_BYTES each). */
  chunks: number;
  createdAt: number;
  expiresAt: number;
  /** Input files: the pool and endpoint every line uses. */
  pool?: string;
  endpoint?: BatchEndpoint;
  /** Output and error files: the batch whose results they are. */
  batchId?: string;
  seq: number;
}

export interface BatchError {
  code: string;
  message: string;
  line: number | null;
  param: string | null;
}

export interface BatchRecord {
  id: string;
  client: string;
  pool: string;
  endpoint: BatchEndpoint;
  /** The endpoint as the client named it (`/chat/completions` from an Azure client), echoed back. */
  endpointShown: string;
  inputFileId: string;
  completionWindow: string;
  status: BatchStatus;
  total: number;
  completed: number;
  failed: number;
  createdAt: number;
  expiresAt: number;
  /** When the batch and its results are dropped (retention after the window). */
  dropAt: number;
  inProgressAt?: number;
  finalizingAt?: number;
  completedAt?: number;
  failedAt?: number;
  expiredAt?: number;
  cancellingAt?: number;
  cancelledAt?: number;
  /** Set when the batch ended with lines of that kind. */
  outputFileId?: string;
  errorFileId?: string;
  /** The ids its output and error files get (allocated at creation). */
  outId: string;
  errId: string;
  metadata: Record<string, string> | null;
  errors: BatchError[] | null;
  seq: number;
}

type Hash = Record<string, string>;

const num = (value: string | undefined): number | undefined => (value === undefined || value === '' ? undefined : Number(value));

export function fileFromHash(hash: Hash): FileRecord | undefined {
  if (!hash.id) return undefined;
  return {
    id: hash.id,
    client: hash.client ?? '',
    purpose: hash.purpose as FilePurpose,
    kind: hash.kind as FileKind,
    filename: hash.filename ?? '',
    bytes: num(hash.bytes) ?? 0,
    lines: num(hash.lines) ?? 0,
    chunks: num(hash.chunks) ?? 0,
    createdAt: num(hash.createdAt) ?? 0,
    expiresAt: num(hash.expiresAt) ?? 0,
    ...(hash.pool ? { pool: hash.pool } : {}),
    ...(hash.endpoint ? { endpoint: hash.endpoint as BatchEndpoint } : {}),
    ...(hash.batchId ? { batchId: hash.batchId } : {}),
    seq: num(hash.seq) ?? 0,
  };
}

export function fileHash(file: Omit<FileRecord, 'seq'>): string[] {
  const fields: Record<string, string | number | undefined> = {
    id: file.id,
    client: file.client,
    purpose: file.purpose,
    kind: file.kind,
    filename: file.filename,
    bytes: file.bytes,
    lines: file.lines,
    chunks: file.chunks,
    createdAt: file.createdAt,
    expiresAt: file.expiresAt,
    pool: file.pool,
    endpoint: file.endpoint,
    batchId: file.batchId,
  };
  return Object.entries(fields).flatMap(([key, value]) => (value === undefined ? [] : [key, String(value)]));
}

export function batchFromHash(hash: Hash): BatchRecord | undefined {
  if (!hash.id) return undefined;
  return {
    id: hash.id,
    client: hash.client ?? '',
    pool: hash.pool ?? '',
    endpoint: hash.endpoint as BatchEndpoint,
    endpointShown: hash.endpointShown ?? hash.endpoint ?? '',
    inputFileId: hash.inputFileId ?? '',
    completionWindow: hash.completionWindow ?? '24h',
    status: hash.status as BatchStatus,
    total: num(hash.total) ?? 0,
    completed: num(hash.completed) ?? 0,
    failed: num(hash.failed) ?? 0,
    createdAt: num(hash.createdAt) ?? 0,
    expiresAt: num(hash.expiresAt) ?? 0,
    dropAt: num(hash.dropAt) ?? 0,
    inProgressAt: num(hash.inProgressAt),
    finalizingAt: num(hash.finalizingAt),
    completedAt: num(hash.completedAt),
    failedAt: num(hash.failedAt),
    expiredAt: num(hash.expiredAt),
    cancellingAt: num(hash.cancellingAt),
    cancelledAt: num(hash.cancelledAt),
    ...(hash.outputFileId ? { outputFileId: hash.outputFileId } : {}),
    ...(hash.errorFileId ? { errorFileId: hash.errorFileId } : {}),
    outId: hash.outId ?? '',
    errId: hash.errId ?? '',
    metadata: hash.metadata ? (JSON.parse(hash.metadata) as Record<string, string>) : null,
    errors: hash.errors ? (JSON.parse(hash.errors) as BatchError[]) : null,
    seq: num(hash.seq) ?? 0,
  };
}

const seconds = (ms: number | undefined): number | null => (ms === undefined ? null : Math.floor(ms / 1000));

/** OpenAI's file object. */
export function fileObject(file: FileRecord): Record<string, unknown> {
  return {
    id: file.id,
    object: 'file',
    bytes: file.bytes,
    created_at: seconds(file.createdAt),
    filename: file.filename,
    purpose: file.purpose,
    status: 'processed',
    expires_at: seconds(file.expiresAt),
    status_details: null,
  };
}

/** OpenAI's batch object. */
export function batchObject(batch: BatchRecord): Record<string, unknown> {
  return {
    id: batch.id,
    object: 'batch',
    endpoint: batch.endpointShown,
    model: batch.pool,
    errors: batch.errors ? { object: 'list', data: batch.errors } : null,
    input_file_id: batch.inputFileId,
    completion_window: batch.completionWindow,
    status: batch.status,
    output_file_id: batch.outputFileId ?? null,
    error_file_id: batch.errorFileId ?? null,
    created_at: seconds(batch.createdAt),
    in_progress_at: seconds(batch.inProgressAt),
    expires_at: seconds(batch.expiresAt),
    finalizing_at: seconds(batch.finalizingAt),
    completed_at: seconds(batch.completedAt),
    failed_at: seconds(batch.failedAt),
    expired_at: seconds(batch.expiredAt),
    cancelling_at: seconds(batch.cancellingAt),
    cancelled_at: seconds(batch.cancelledAt),
    request_counts: { total: batch.total, completed: batch.completed, failed: batch.failed },
    metadata: batch.metadata,
  };
}

/** OpenAI's list object (files, batches). */
export function listObject(data: Record<string, unknown>[], hasMore: boolean): Record<string, unknown> {
  return {
    object: 'list',
    data,
    first_id: (data[0]?.id as string | undefined) ?? null,
    last_id: (data.at(-1)?.id as string | undefined) ?? null,
    has_more: hasMore,
  };
}
