/**
 * A sliding-window sum kept in time buckets with a running total: O(1) per add, no per-request
 * memory. An amount added at time t counts until the end of its bucket's window, i.e. for between
 * windowMs - bucketMs and windowMs. Sums and limits are exact; only expiry is bucket-aligned, and
 * timeUntilFree() reports exactly that bucket-aligned expiry.
 */
export class SlidingWindowCounter {
  readonly windowMs: number;
  private readonly bucketMs: number;
  private readonly buckets: Float64Array;
  /** Absolute index (floor(time / bucketMs)) of the newest bucket in the ring. */
  private newestBucket = -Infinity;
  private runningTotal = 0;

  constructor(windowMs: number, bucketCount = 60) {
    this.windowMs = windowMs;
    this.bucketMs = windowMs / bucketCount;
    this.buckets = new Float64Array(bucketCount);
  }

  /** Sum of everything added in the window that ends at `now`. */
  total(now: number): number {
    this.advance(now);
    return this.runningTotal;
  }

  add(amount: number, now: number): void {
    this.advance(now);
    const slot = this.newestBucket % this.buckets.length;
    this.buckets[slot] = (this.buckets[slot] ?? 0) + amount;
    this.runningTotal += amount;
  }

  /**
   * Milliseconds from `now` until at least `amount` has left the window (0 if amount <= 0).
   * Infinity if the window does not hold that much.
   */
  timeUntilFree(amount: number, now: number): number {
    this.advance(now);
    if (amount <= 0) return 0;
    const count = this.buckets.length;
    let freed = 0;
    for (let index = this.newestBucket - count + 1; index <= this.newestBucket; index++) {
      freed += this.buckets[index % count] ?? 0;
      // Bucket `index` leaves the window once floor(now / bucketMs) reaches index + count.
      if (freed >= amount) return Math.max(0, (index + count) * this.bucketMs - now);
    }
    return Infinity;
  }

  clear(): void {
    this.buckets.fill(0);
    this.runningTotal = 0;
    this.newestBucket = -Infinity;
  }

  /** Drop the buckets that left the window since the last call. */
  private advance(now: number): void {
    const current = Math.floor(now / this.bucketMs);
    if (current <= this.newestBucket) return;
    const count = this.buckets.length;
    if (current - this.newestBucket >= count) {
      this.buckets.fill(0);
      this.runningTotal = 0;
    } else {
      for (let index = this.newestBucket + 1; index <= current; index++) {
        const slot = index % count;
        this.runningTotal -= this.buckets[slot] ?? 0;
        this.buckets[slot] = 0;
      }
    }
    this.newestBucket = current;
  }
}
