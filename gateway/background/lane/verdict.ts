/**
 * What a line's answer means for the line: its result, a wait that is not the line's fault (the pool
 * has no room above the reserve; the client is at its quota), or a failed try that counts against
 * background.lineAttempts (Azure's 429 passed on, a 5xx, no answer). Waits take the time the gateway
 * or Azure named; only a failure that named none gets a bounded backoff.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { THROTTLE_HEADER } from '../../routing/dispatcher.ts';
import { header } from '../../upstream/headers.ts';
import { retryAfterMs } from '../../upstream/retry-after.ts';
import type { LineOutcome } from '../contract.ts';
import type { LoopbackAnswer } from './loopback.ts';

export type Verdict =
  /** The line's result: record it. */
  | { kind: 'record'; outcome: LineOutcome }
  /** No deployment of the pool has room above the reserve: the pool's whole lane waits this long. */
  | { kind: 'pool-wait'; waitMs: number }
  /** The batch's client is at its quota: this line waits this long (others may run). */
  | { kind: 'line-wait'; waitMs: number }
  /** A failed try: again after waitMs (Azure's or the gateway's retry time, else a backoff), or `last` is the result once tries run out. */
  | { kind: 'retry'; waitMs: number | undefined; last: LineOutcome; reason: 'upstream-429' | 'upstream-error' | 'no-answer' };

/** Backoff of a failed try that named no retry time: 1 s, 2 s, 4 s … at most MAX_BACKOFF_MS. */
const FIRST_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 60_000;

export function backoffMs(tries: number): number {
  return Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** Math.max(0, tries - 1));
}

export function verdictOf(answer: LoopbackAnswer): Verdict {
  if (answer.kind === 'no-answer') {
    const outcome: LineOutcome = answer.timedOut
      ? { kind: 'error', code: 'request_timeout', message: 'The gateway did not answer the request in time.' }
      : { kind: 'error', code: 'request_failed', message: `The request got no answer: ${answer.message}` };
    return { kind: 'retry', waitMs: undefined, last: outcome, reason: 'no-answer' };
  }
  const { status, headers } = answer;
  const outcome = responseOutcome(answer);
  if (status === 429) {
    const waitMs = retryAfterMs(headers);
    const refusal = header(headers, THROTTLE_HEADER);
    if (refusal === 'client-quota') return { kind: 'line-wait', waitMs: waitMs ?? FIRST_BACKOFF_MS };
    // Refused before any deployment was tried: the pool has no room for background work now.
    if (refusal !== undefined && attemptsOf(headers) === 0) return { kind: 'pool-wait', waitMs: waitMs ?? FIRST_BACKOFF_MS };
    return { kind: 'retry', waitMs, last: outcome, reason: 'upstream-429' };
  }
  if (status >= 500) return { kind: 'retry', waitMs: retryAfterMs(headers), last: outcome, reason: 'upstream-error' };
  return { kind: 'record', outcome };
}

function attemptsOf(headers: IncomingHttpHeaders): number {
  const attempts = Number(header(headers, 'x-gateway-attempts') ?? '0');
  return Number.isFinite(attempts) ? attempts : 0;
}

/** The answer as the output (2xx) or error file shows it: its status, request id and JSON body (text when not JSON). */
function responseOutcome(answer: Extract<LoopbackAnswer, { kind: 'answer' }>): LineOutcome {
  const text = answer.body.toString('utf8');
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // kept as text
  }
  return { kind: 'response', statusCode: answer.status, requestId: header(answer.headers, 'x-request-id') ?? '', body };
}
