/**
 * The store the gateway uses: Redis when REDIS_URL or REDIS_CLUSTER_NODES is configured (any number of
 * instances; a cluster through ioredis's Cluster client), otherwise in memory (one instance). Same
 * contract either way; see types.ts.
 */
import { MemoryStore } from './memory-store.ts';
import { connectRedis, type RedisTarget } from './redis-target.ts';
import { RedisStore, STORE_REDIS_OPTIONS } from './redis-store.ts';
import type { Store, StoreOptions } from './types.ts';

export interface CreateStoreOptions extends StoreOptions {
  /** One Redis or a cluster (redis-target.ts); wins over redisUrl. */
  redis?: RedisTarget | undefined;
  /** redis:// or rediss:// URL of one Redis; neither this nor `redis` → in-memory store. */
  redisUrl?: string | undefined;
}

export function createStore({ redis, redisUrl, ...options }: CreateStoreOptions = {}): Store {
  const target: RedisTarget | undefined = redis ?? (redisUrl ? { kind: 'single', url: redisUrl } : undefined);
  if (!target) return new MemoryStore(options);
  if (target.kind === 'single') return new RedisStore(target.url, options);
  const client = connectRedis(target, STORE_REDIS_OPTIONS);
  // Failures surface as rejected commands (and ping false); without a listener ioredis logs each one.
  client.on('error', () => {});
  try {
    return new RedisStore(client, { ...options, closeClient: true });
  } catch (error) {
    // Bad options: the client made for the store must not go on connecting (and holding the process).
    client.disconnect();
    throw error;
  }
}

export { MemoryStore, type MemoryStoreOptions } from './memory-store.ts';
export { RedisStore, STORE_REDIS_OPTIONS } from './redis-store.ts';
export {
  connectRedis,
  describeRedisTarget,
  parseClusterNodes,
  redisTargetFrom,
  storeKind,
  type RedisClient,
  type RedisTarget,
} from './redis-target.ts';
export * from './types.ts';
