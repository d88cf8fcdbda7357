/**
 * In-process twin of lua/includes/window.lua: per-bucket token and request counts with running
 * totals, exact at bucket granularity and O(1) amortized per touch. Keep the two in step.
 */
import { SHORT_WINDOW_BUCKETS, WINDOW_BUCKETS, shortWindowLimit } from './constants.ts';

interface BucketCounts {
  tokens: number;
  requests: number;
}

export interface WindowCounts {
  tokens: number;
  requests: number;
  shortRequests: number;
}

/**
 * Whether a request of `tokens` fits budgets tpm / rpm (undefined = unlimited) given the window's counts.
 * shortWindow false: rpm holds over the whole window only (client quotas). shortLimit: the short window's
 * limit when not ceil(rpm / 6) (background requests' reduced one).
 */
export function fitsBudget(
  tokens: number,
  tpm: number | undefined,
  rpm: number | undefined,
  counts: WindowCounts,
  shortWindow = true,
  shortLimit?: number,
): boolean {
  if (tpm !== undefined && counts.tokens + tokens > tpm) return false;
  if (rpm !== undefined && counts.requests + 1 > rpm) return false;
  if (rpm !== undefined && shortWindow && counts.shortRequests + 1 > (shortLimit ?? shortWindowLimit(rpm))) return false;
  return true;
}

export class SlidingWindow {
  /** Newest bucket; undefined while nothing is booked (the Lua hash does not exist). */
  #head: number | undefined;
  #tokens = 0;
  #requests = 0;
  readonly #buckets = new Map<number, BucketCounts>();

  /** Moves the window to nowBucket, dropping buckets that left it; returns the newest bucket. */
  advance(nowBucket: number): number {
    const head = this.#head;
    if (head === undefined) return nowBucket;
    if (nowBucket <= head) return head;
    if (nowBucket - head >= WINDOW_BUCKETS) {
      this.#reset();
      return nowBucket;
    }
    for (let bucket = head - WINDOW_BUCKETS + 1; bucket <= nowBucket - WINDOW_BUCKETS; bucket++) {
      const counts = this.#buckets.get(bucket);
      if (!counts) continue;
      this.#tokens -= counts.tokens;
      this.#requests -= counts.requests;
      this.#buckets.delete(bucket);
    }
    this.#tokens = Math.max(0, this.#tokens);
    this.#requests = Math.max(0, this.#requests);
    this.#head = nowBucket;
    return nowBucket;
  }

  read(newestBucket: number): WindowCounts {
    let shortRequests = 0;
    for (let bucket = newestBucket - SHORT_WINDOW_BUCKETS + 1; bucket <= newestBucket; bucket++) {
      shortRequests += this.#buckets.get(bucket)?.requests ?? 0;
    }
    return { tokens: this.#tokens, requests: this.#requests, shortRequests };
  }

  /** Books one request of `tokens` into the newest bucket (the window must be advanced to it). */
  book(newestBucket: number, tokens: number): void {
    this.add(newestBucket, tokens, 1);
  }

  /** Adds whole tokens and requests (>= 0) to the newest bucket (the window must be advanced to it). */
  add(newestBucket: number, tokens: number, requests: number): void {
    const counts = this.#buckets.get(newestBucket) ?? { tokens: 0, requests: 0 };
    counts.tokens += tokens;
    counts.requests += requests;
    this.#buckets.set(newestBucket, counts);
    this.#tokens += tokens;
    this.#requests += requests;
    this.#head = newestBucket;
  }

  /** Adds whole tokens (>= 0) spread evenly over the window's buckets, the remainder one each to the oldest (window.lua's spreadOverWindow). */
  spread(newestBucket: number, tokens: number): void {
    if (tokens <= 0) return;
    const share = Math.floor(tokens / WINDOW_BUCKETS);
    const extra = tokens - share * WINDOW_BUCKETS;
    const oldest = newestBucket - WINDOW_BUCKETS + 1;
    for (let i = 0; i < WINDOW_BUCKETS; i++) {
      const amount = share + (i < extra ? 1 : 0);
      if (amount === 0) continue;
      const counts = this.#buckets.get(oldest + i) ?? { tokens: 0, requests: 0 };
      counts.tokens += amount;
      this.#buckets.set(oldest + i, counts);
    }
    this.#tokens += tokens;
    this.#head = newestBucket;
  }

  /** Adds delta to a bucket still inside the window and to the total, never below zero. */
  adjust(newestBucket: number, bucket: number, delta: number): void {
    if (delta === 0 || this.#head === undefined || bucket > newestBucket || bucket <= newestBucket - WINDOW_BUCKETS) return;
    const counts = this.#buckets.get(bucket) ?? { tokens: 0, requests: 0 };
    const adjusted = Math.max(0, counts.tokens + delta);
    this.#tokens = Math.max(0, this.#tokens + adjusted - counts.tokens);
    counts.tokens = adjusted;
    this.#buckets.set(bucket, counts);
  }

  /** Takes one request out of a bucket still inside the window, and out of the total (a booking withdrawn). */
  withdrawRequest(newestBucket: number, bucket: number): void {
    if (this.#head === undefined || bucket > newestBucket || bucket <= newestBucket - WINDOW_BUCKETS) return;
    const counts = this.#buckets.get(bucket);
    if (!counts || counts.requests === 0) return;
    counts.requests -= 1;
    this.#requests = Math.max(0, this.#requests - 1);
  }

  /**
   * Milliseconds until the window admits the request if nothing else is booked; 0 now, -1 never.
   * shortWindow false: rpm holds over the whole window only (client quotas); shortLimit as fitsBudget's.
   */
  waitMs(
    newestBucket: number,
    nowMs: number,
    bucketMs: number,
    tokens: number,
    tpm?: number,
    rpm?: number,
    shortWindow = true,
    shortLimit?: number,
  ): number {
    if (tpm !== undefined && tokens > tpm) return -1;
    if (rpm !== undefined && rpm < 1) return -1;
    const counts = this.read(newestBucket);
    for (let future = newestBucket; future <= newestBucket + WINDOW_BUCKETS; future++) {
      if (future > newestBucket) {
        const leaving = this.#buckets.get(future - WINDOW_BUCKETS);
        counts.tokens -= leaving?.tokens ?? 0;
        counts.requests -= leaving?.requests ?? 0;
        const leavingShort = future - SHORT_WINDOW_BUCKETS;
        if (leavingShort <= newestBucket) counts.shortRequests -= this.#buckets.get(leavingShort)?.requests ?? 0;
      }
      if (fitsBudget(tokens, tpm, rpm, counts, shortWindow, shortLimit)) return Math.max(0, future * bucketMs - nowMs);
    }
    return -1;
  }

  #reset(): void {
    this.#head = undefined;
    this.#tokens = 0;
    this.#requests = 0;
    this.#buckets.clear();
  }
}
