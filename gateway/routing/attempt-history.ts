/**
 * What the attempts of one request ran into, and from it the truth to tell the client when none
 * succeeded: the pool is full (429 with a retry time that works), or broken (the deployment's own
 * error, 502 or 504).
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { GatewaySettings } from '../../shared/config/schema.ts';
import { errors, type AzureError } from '../errors.ts';
import type { Pool } from '../pools.ts';
import type { Refusal } from './leasing.ts';
import type { Affinity } from './proxied-request.ts';

export interface FailedAttempt {
  deployment: string;
  status?: number;
  headers?: IncomingHttpHeaders;
  body?: Buffer;
  timedOut?: boolean;
  /** Epoch ms the deployment's cooldown ends, after a 429. */
  cooldownUntil?: number;
}

/** The final answer: a gateway error, or a deployment's own error response relayed. */
export type Answer = { error: AzureError } | { relay: FailedAttempt };

export class AttemptHistory {
  last: FailedAttempt | undefined;
  /** True while every failure was a throttle (429) or a misconfigured deployment: the pool is full, not broken. */
  onlyThrottled = true;
  soonestCooldownUntil: number | undefined;
  /** Attempts that ended in a 429. */
  throttles = 0;
  /** Deployments not to be tried again. A throttled one is not among them: its cooldown keeps it out exactly as long as it asked. */
  readonly tried: string[] = [];

  record(failure: FailedAttempt): void {
    this.last = failure;
    if (failure.status === 429) this.throttles += 1;
    if (failure.cooldownUntil === undefined) this.onlyThrottled = false;
    else this.soonestCooldownUntil = Math.min(this.soonestCooldownUntil ?? Number.POSITIVE_INFINITY, failure.cooldownUntil);
  }

  exclude(deployment: string): void {
    this.tried.push(deployment);
  }
}

/**
 * What to answer when the request is not served: after the store refused (`refusal`), or when the
 * attempts or the deadline ran out (no refusal).
 */
export function finalAnswer(history: AttemptHistory, pool: Pool, settings: GatewaySettings, refusal?: Refusal): Answer {
  const failure = history.last;
  if (refusal && (!failure || history.onlyThrottled)) return { error: saturatedByRefusal(history, pool, settings, refusal) };
  if (!failure) return { error: errors.upstreamTimeout() };
  if (history.onlyThrottled) {
    const retryAfter = (history.soonestCooldownUntil ?? Date.now() + settings.defaultCooldownMs) - Date.now();
    return { error: errors.saturated(pool.name, Math.max(1, retryAfter), 'throttled or unavailable') };
  }
  if (failure.status === undefined || failure.status === 404) {
    return { error: failure.timedOut ? errors.upstreamTimeout() : errors.upstreamUnreachable() };
  }
  return { relay: failure };
}

/** The 429 when no deployment can take the request now, with when the soonest frees. */
function saturatedByRefusal(history: AttemptHistory, pool: Pool, settings: GatewaySettings, refusal: Refusal): AzureError {
  // Deployments this request already tried are excluded from the store's answer, so their own
  // cooldowns are folded in; when it tried every one, the store's figure is about none of them.
  const untried = history.tried.length < pool.deployments.size;
  let retryAfter = untried ? refusal.retryAfterMs : Number.POSITIVE_INFINITY;
  if (history.soonestCooldownUntil !== undefined) retryAfter = Math.min(retryAfter, history.soonestCooldownUntil - Date.now());
  if (!Number.isFinite(retryAfter)) retryAfter = settings.defaultCooldownMs;
  const detail = refusal.reason !== 'unavailable' && !history.last ? 'at its token or request budget' : 'throttled or unavailable';
  return errors.saturated(pool.name, Math.max(1, retryAfter), detail);
}

/**
 * The answer to a request pinned to the resource that holds its state, when that resource cannot
 * serve it now: a 429 (its budget, or throttled) or a 503 (out of rotation), with a retry time, and a
 * message that says why no other deployment was tried.
 */
export function pinnedAnswer(answer: Answer, affinity: Affinity, outOfRotation: boolean): Answer {
  if ('relay' in answer) return answer;
  const { error } = answer;
  const where = `${affinity.reference} lives on the Azure resource ${affinity.host}`;
  if (error.status !== 429) return { error: { ...error, message: `${where}, which failed: ${error.message}` } };
  const seconds = error.headers?.['retry-after'] ?? '1';
  const state = outOfRotation ? 'out of rotation (failing, or drained)' : 'at its token or request budget, or throttled';
  return {
    error: {
      ...error,
      status: outOfRotation ? 503 : 429,
      code: outOfRotation ? 'ServiceUnavailable' : '429',
      message: `${where}, which is ${state}; only that resource can continue it. Please retry after ${seconds} second${seconds === '1' ? '' : 's'}.`,
    },
  };
}
