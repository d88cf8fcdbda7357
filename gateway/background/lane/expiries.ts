/**
 * The batches the lane has in hand, by the end of their completion window (one sorted set), so the
 * expiry sweep finds those past it without reading every batch. A batch enters when it is submitted
 * and leaves when it finishes (or the sweep finds it over).
 */
import type { Cluster, Redis } from 'ioredis';

export class Expiries {
  private readonly redis: Redis | Cluster;
  private readonly key: string;

  constructor(redis: Redis | Cluster, keyPrefix: string) {
    this.redis = redis;
    this.key = `${keyPrefix}:expiring`;
  }

  async add(batchId: string, expiresAt: number): Promise<void> {
    await this.redis.zadd(this.key, expiresAt, batchId);
  }

  async forget(batchId: string): Promise<void> {
    await this.redis.zrem(this.key, batchId);
  }

  /** Batches whose window ended by `now`, oldest first, at most `limit`. */
  async due(now: number, limit: number): Promise<string[]> {
    return this.redis.zrangebyscore(this.key, '-inf', now, 'LIMIT', 0, limit);
  }
}
