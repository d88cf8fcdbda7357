/**
 * The benchmark's batch, through the unmodified `openai` SDK as a team would send it: the JSONL input
 * file, the upload (files.create), the batch (batches.create), its status read until it ends, and the
 * output and error files read back and checked line for line (every custom_id exactly once).
 */
import OpenAI, { toFile } from 'openai';
import type { Batch } from 'openai/resources/batches';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLIENT_KEY } from '../lib/stack.ts';
import { BATCH_POLL_MS, FILE_TIMEOUT_MS, lineBody, type Settings } from './settings.ts';

const TERMINAL = new Set<Batch['status']>(['completed', 'failed', 'expired', 'cancelled']);

export function batchClient(gatewayUrl: string): OpenAI {
  return new OpenAI({ baseURL: `${gatewayUrl}/openai/v1`, apiKey: CLIENT_KEY, maxRetries: 0, timeout: FILE_TIMEOUT_MS });
}

const customId = (index: number) => `line-${index}`;

/** The input file: `lines` chat completions on `pool`, one request per line as OpenAI's Batch API takes them. */
export function inputFile(settings: Settings, pool: string): Buffer {
  const lines = Array.from({ length: settings.lines }, (_, index) =>
    JSON.stringify({ custom_id: customId(index), method: 'POST', url: '/v1/chat/completions', body: lineBody(settings, pool, index) }),
  );
  return Buffer.from(`${lines.join('\n')}\n`);
}

export async function uploadInput(openai: OpenAI, file: Buffer): Promise<{ fileId: string; ms: number }> {
  const started = performance.now();
  const created = await openai.files.create({ purpose: 'batch', file: await toFile(file, 'lines.jsonl') });
  return { fileId: created.id, ms: performance.now() - started };
}

export function createBatch(openai: OpenAI, fileId: string): Promise<Batch> {
  return openai.batches.create({ input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h' });
}

export interface BatchProgress {
  /** performance.now() of the read, and the lines settled then (completed + failed). */
  atMs: number;
  settled: number;
  status: Batch['status'];
}

/**
 * Reads the batch every BATCH_POLL_MS until it ends or `deadlineMs` (performance.now()) passes.
 * Returns the last batch read (undefined when none could be read) and when its end was seen.
 */
export async function waitForBatch(
  openai: OpenAI,
  batchId: string,
  deadlineMs: number,
  onRead: (progress: BatchProgress) => void,
): Promise<{ batch: Batch | undefined; endedAtMs: number | undefined; readErrors: number }> {
  let batch: Batch | undefined;
  let readErrors = 0;
  for (let poll = 0; poll < 100_000 && performance.now() < deadlineMs; poll++) {
    try {
      batch = await openai.batches.retrieve(batchId, { timeout: 5000 });
      const counts = batch.request_counts;
      onRead({ atMs: performance.now(), settled: (counts?.completed ?? 0) + (counts?.failed ?? 0), status: batch.status });
      if (TERMINAL.has(batch.status)) return { batch, endedAtMs: performance.now(), readErrors };
    } catch {
      readErrors += 1;
    }
    await sleep(Math.max(0, Math.min(BATCH_POLL_MS, deadlineMs - performance.now())));
  }
  return { batch, endedAtMs: undefined, readErrors };
}

export interface OutputCheck {
  outputLines: number;
  errorLines: number;
  /** Lines by the status code of their response (0: no response, an error line). */
  byStatus: Record<string, number>;
  /** custom_ids of the input not found in either file, and found more than once. */
  missing: number;
  duplicates: number;
  /** Why the files could not be read, if they could not. */
  error?: string;
}

interface ResultLine {
  custom_id?: string;
  response?: { status_code?: number } | null;
}

async function fileLines(openai: OpenAI, fileId: string | null | undefined): Promise<ResultLine[]> {
  if (!fileId) return [];
  const response = await openai.files.content(fileId);
  const text = await response.text();
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as ResultLine);
}

/** Reads the output and error files back: every custom_id of the input exactly once. */
export async function checkOutput(openai: OpenAI, batch: Batch, lines: number): Promise<OutputCheck> {
  try {
    const output = await fileLines(openai, batch.output_file_id);
    const errors = await fileLines(openai, batch.error_file_id);
    const seen = new Map<string, number>();
    const byStatus: Record<string, number> = {};
    for (const line of [...output, ...errors]) {
      const id = line.custom_id ?? '';
      seen.set(id, (seen.get(id) ?? 0) + 1);
      const status = String(line.response?.status_code ?? 0);
      byStatus[status] = (byStatus[status] ?? 0) + 1;
    }
    let missing = 0;
    for (let index = 0; index < lines; index++) if (!seen.has(customId(index))) missing += 1;
    const duplicates = [...seen.values()].reduce((acc, count) => acc + Math.max(0, count - 1), 0);
    return { outputLines: output.length, errorLines: errors.length, byStatus, missing, duplicates };
  } catch (error) {
    return { outputLines: 0, errorLines: 0, byStatus: {}, missing: lines, duplicates: 0, error: (error as Error).message };
  }
}
