/**
 * Reads how long a throttled deployment asks to be left alone. Azure has sent every one of these
 * variants over the years (see ../shared/reference/azure-openai-api.md §2), so all are read, most
 * precise first.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { header } from './headers.ts';

function positiveNumber(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text.trim());
  return Number.isFinite(value) && value > 0 ? value : undefined;
}

/** Milliseconds the deployment asked for, or undefined when it named no time. */
export function retryAfterMs(headers: IncomingHttpHeaders, now = Date.now()): number | undefined {
  const ms = positiveNumber(header(headers, 'retry-after-ms')) ?? positiveNumber(header(headers, 'x-ms-retry-after-ms'));
  if (ms !== undefined) return Math.ceil(ms);
  const retryAfter = header(headers, 'retry-after');
  if (retryAfter !== undefined) {
    const seconds = positiveNumber(retryAfter);
    if (seconds !== undefined) return Math.ceil(seconds * 1000);
    const date = Date.parse(retryAfter);
    if (Number.isFinite(date) && date > now) return date - now;
  }
  for (const name of [
    'x-ratelimit-reset-tokens',
    'x-ratelimit-reset-requests',
    'x-rate-limit-reset-tokens',
    'x-rate-limit-reset-requests',
  ]) {
    const seconds = positiveNumber(header(headers, name));
    if (seconds !== undefined) return Math.ceil(seconds * 1000);
  }
  return undefined;
}
