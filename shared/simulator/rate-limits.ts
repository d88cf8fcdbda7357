/**
 * Per-deployment admission control, as Azure does it:
 * - Standard: a token estimate over a sliding "minute" plus a request count over a 10-second
 *   window (a sixth of the minute) with ceil(rpm/6) requests; 429 past either.
 * - PTU: a leaky bucket whose level drains continuously; requests are admitted while utilization
 *   is below 100% (so one burst may overshoot) and their estimate is corrected on completion.
 */
import { SlidingWindowCounter } from './sliding-window.ts';
import type { SimDeployment } from './types.ts';

export type Admission =
  | { admitted: true }
  /** `limit` names Azure's message wording: "token rate limit" or "call rate limit". */
  | { admitted: false; retryAfterMs: number; limit: 'token' | 'call' };

export interface DeploymentLimiter {
  /** Decide on a request whose estimated cost is `estimate` tokens, and account for it. */
  admit(estimate: number, now: number): Admission;
  /** The request finished having really cost `actual` tokens (PTU corrects its bucket). */
  settle(estimate: number, actual: number, now: number): void;
  /** Append this deployment's rate-limit headers as flat [name, value, ...] pairs. */
  appendHeaders(headers: string[], now: number, exhausted?: boolean): void;
  reset(): void;
}

/**
 * Node timers may fire up to a millisecond before the requested delay, and bucket edges are
 * floating-point products; one extra millisecond makes "wait retry-after-ms, then retry" enough.
 */
const RETRY_MARGIN_MS = 1;

const ADMITTED: Admission = { admitted: true };

export function createLimiter(deployment: SimDeployment, windowMs: number, countRejected: boolean): DeploymentLimiter {
  if (deployment.ptu) return new ProvisionedLimiter(deployment.ptu.tokensPerMinute, windowMs);
  const requestsPerMinute = deployment.rpm ?? (deployment.tpm !== undefined ? (deployment.tpm / 1000) * 6 : undefined);
  if (deployment.tpm === undefined && requestsPerMinute === undefined) return UNLIMITED;
  return new StandardLimiter(deployment.tpm, requestsPerMinute, windowMs, countRejected);
}

const UNLIMITED: DeploymentLimiter = {
  admit: () => ADMITTED,
  settle: () => {},
  // Azure omits limit headers where no limit applies; so do we.
  appendHeaders: () => {},
  reset: () => {},
};

export class StandardLimiter implements DeploymentLimiter {
  /** Tokens per window, or null when only requests are limited. */
  readonly tokenLimit: number | null;
  /** Requests per short window (windowMs/6), or null when only tokens are limited. */
  readonly requestLimit: number | null;
  private readonly windowMs: number;
  private readonly countRejected: boolean;
  private readonly tokens: SlidingWindowCounter;
  private readonly requests: SlidingWindowCounter;

  constructor(tpm: number | undefined, rpm: number | undefined, windowMs: number, countRejected: boolean) {
    this.tokenLimit = tpm ?? null;
    this.requestLimit = rpm === undefined ? null : Math.ceil(rpm / 6);
    this.windowMs = windowMs;
    this.countRejected = countRejected;
    this.tokens = new SlidingWindowCounter(windowMs);
    this.requests = new SlidingWindowCounter(windowMs / 6);
  }

  admit(estimate: number, now: number): Admission {
    const tokensOver = this.tokenLimit !== null && this.tokens.total(now) + estimate > this.tokenLimit;
    const requestsOver = this.requestLimit !== null && this.requests.total(now) + 1 > this.requestLimit;
    if (!tokensOver && !requestsOver) {
      this.account(estimate, now);
      return ADMITTED;
    }
    // Azure: "rejected requests still count" toward the limits.
    if (this.countRejected) this.account(estimate, now);
    return { admitted: false, retryAfterMs: this.timeUntilAdmissible(estimate, now), limit: tokensOver ? 'token' : 'call' };
  }

  settle(): void {
    // Standard deployments bill the estimate taken on arrival; nothing to correct.
  }

  appendHeaders(headers: string[], now: number, exhausted = false): void {
    if (this.requestLimit !== null) {
      const remaining = exhausted ? 0 : Math.max(0, this.requestLimit - this.requests.total(now));
      headers.push('x-ratelimit-remaining-requests', String(remaining), 'x-ratelimit-limit-requests', String(this.requestLimit));
    }
    if (this.tokenLimit !== null) {
      const remaining = exhausted ? 0 : Math.max(0, this.tokenLimit - this.tokens.total(now));
      headers.push('x-ratelimit-remaining-tokens', String(remaining), 'x-ratelimit-limit-tokens', String(this.tokenLimit));
    }
  }

  reset(): void {
    this.tokens.clear();
    this.requests.clear();
  }

  private account(estimate: number, now: number): void {
    if (this.tokenLimit !== null) this.tokens.add(estimate, now);
    if (this.requestLimit !== null) this.requests.add(1, now);
  }

  /** When the same request would pass if nothing else arrived meanwhile. */
  private timeUntilAdmissible(estimate: number, now: number): number {
    let wait = 0;
    if (this.tokenLimit !== null) {
      wait = Math.max(wait, this.tokens.timeUntilFree(this.tokens.total(now) + estimate - this.tokenLimit, now));
    }
    if (this.requestLimit !== null) {
      wait = Math.max(wait, this.requests.timeUntilFree(this.requests.total(now) + 1 - this.requestLimit, now));
    }
    // A request larger than the whole budget never fits; Azure still names a time, so say one window.
    if (!Number.isFinite(wait)) return this.windowMs;
    return Math.ceil(wait) + RETRY_MARGIN_MS;
  }
}

export class ProvisionedLimiter implements DeploymentLimiter {
  readonly capacity: number;
  private readonly drainPerMs: number;
  private level = 0;
  private levelAt = 0;

  constructor(tokensPerMinute: number, windowMs: number) {
    this.capacity = tokensPerMinute;
    this.drainPerMs = tokensPerMinute / windowMs;
  }

  admit(estimate: number, now: number): Admission {
    this.drain(now);
    if (this.level < this.capacity) {
      this.level += estimate;
      return ADMITTED;
    }
    // PTU docs: retry-after-ms is "the time until utilization is below 100%"; nothing is counted.
    const wait = (this.level - this.capacity) / this.drainPerMs;
    return { admitted: false, retryAfterMs: Math.ceil(wait) + RETRY_MARGIN_MS, limit: 'token' };
  }

  settle(estimate: number, actual: number, now: number): void {
    this.drain(now);
    this.level = Math.max(0, this.level + actual - estimate);
  }

  /** Utilization in percent, e.g. 12.5. */
  utilization(now: number): number {
    this.drain(now);
    return (this.level / this.capacity) * 100;
  }

  appendHeaders(headers: string[], now: number): void {
    headers.push('azure-openai-deployment-utilization', `${Math.round(this.utilization(now) * 10) / 10}%`);
  }

  reset(): void {
    this.level = 0;
  }

  private drain(now: number): void {
    this.level = Math.max(0, this.level - (now - this.levelAt) * this.drainPerMs);
    this.levelAt = now;
  }
}
