/** How the load generator classifies one request's end (see OutcomeClass in protocol.ts). */
import type { OutcomeClass } from './protocol.ts';

export interface RequestEnd {
  /** The response head's status, when a head arrived. */
  headStatus: number | undefined;
  /** The ending's error (socket error code, 'timeout', 'reset-mid-response', 'unfinished'), when it did not end cleanly. */
  error: string | undefined;
  /** The body was whole: a stream that carried data: [DONE], a JSON body that parsed. */
  bodyComplete: boolean;
}

export function classify(end: RequestEnd): OutcomeClass {
  if (end.error === 'unfinished') return 'unfinished';
  const status = end.headStatus;
  if (status === undefined || status === 0) return 'transport';
  if (status >= 200 && status < 300) return end.error === undefined && end.bodyComplete ? 'ok' : 'broken';
  if (status === 429) return 'throttled';
  if (status >= 500) return 'server-error';
  return 'client-error';
}

/** True when a non-streaming body is whole JSON (a body cut short, then ended cleanly by a proxy, is not). */
export function jsonComplete(body: string): boolean {
  try {
    JSON.parse(body);
    return true;
  } catch {
    return false;
  }
}
