/**
 * The store the gateway uses: Redis when REDIS_URL is configured (any number of instances), otherwise
 * in memory (one instance). Same contract either way; see types.ts.
 */
import { MemoryStore } from './memory-store.ts';
import { RedisStore } from './redis-store.ts';
import type { Store, StoreOptions } from './types.ts';

export interface CreateStoreOptions extends StoreOptions {
  /** redis:// or rediss:// URL; absent → in-memory store. */
  redisUrl?: string | undefined;
}

export function createStore({ redisUrl, ...options }: CreateStoreOptions = {}): Store {
  return redisUrl ? new RedisStore(redisUrl, options) : new MemoryStore(options);
}

export { MemoryStore, type MemoryStoreOptions } from './memory-store.ts';
export { RedisStore, STORE_REDIS_OPTIONS } from './redis-store.ts';
export * from './types.ts';
