/**
 * A store client of the scale bench's cluster phase: a child process (forked with an IPC channel)
 * with one store as the gateway makes it (createStore), on one Redis or on a Redis Cluster (seeds),
 * that runs closed loops of acquire + release over the given pools when told to and reports the pairs
 * done. It warms up (scripts loaded on every node, slots known) before it says it is ready, and exits
 * when its parent disconnects.
 */
import { randomUUID } from 'node:crypto';
import { createStore, redisTargetFrom } from '../../shared/store/index.ts';
import type { PoolLayout, Store } from '../../shared/store/types.ts';

export interface StoreClientSpec {
  /** As the gateway takes them: REDIS_URL for one Redis, REDIS_CLUSTER_NODES (host:port,…) for a cluster. */
  redisUrl?: string;
  clusterSeeds?: string;
  pools: PoolLayout[];
  /** Pairs in flight at once in this process. */
  concurrency: number;
}

export type ToStoreClient = { type: 'run'; id: number; durationMs: number };
export type FromStoreClient =
  | { type: 'ready' }
  | { type: 'done'; id: number; pairs: number; errors: number; refused: number; firstError?: string }
  | { type: 'failed'; message: string };

const send = (message: FromStoreClient) => process.send?.(message);
const LEASE_MS = 30_000;
const ESTIMATED_TOKENS = 100;

/** The store exactly as the gateway makes it from its environment (shared/store/index.ts). */
function storeFor(spec: StoreClientSpec): Store {
  const target = redisTargetFrom({ REDIS_URL: spec.redisUrl, REDIS_CLUSTER_NODES: spec.clusterSeeds });
  if (!target) throw new Error('store client: neither a Redis URL nor cluster seeds');
  return createStore({ redis: target });
}

async function pair(store: Store, pool: PoolLayout): Promise<'ok' | 'refused'> {
  const result = await store.acquire({ pool, leaseId: randomUUID(), leaseMs: LEASE_MS, estimatedTokens: ESTIMATED_TOKENS });
  if (!result.ok) return 'refused';
  await store.release(result.lease, ESTIMATED_TOKENS);
  return 'ok';
}

async function run(store: Store, spec: StoreClientSpec, durationMs: number) {
  const counts = { pairs: 0, errors: 0, refused: 0, firstError: undefined as string | undefined };
  const until = performance.now() + durationMs;
  let next = 0;
  const loop = async () => {
    while (performance.now() < until) {
      const pool = spec.pools[next++ % spec.pools.length]!;
      try {
        if ((await pair(store, pool)) === 'ok') counts.pairs += 1;
        else counts.refused += 1;
      } catch (error) {
        counts.errors += 1;
        counts.firstError ??= error instanceof Error ? error.message : String(error);
      }
    }
  };
  await Promise.all(Array.from({ length: spec.concurrency }, loop));
  return counts;
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as StoreClientSpec;
  const store = storeFor(spec);
  // Every pool once (on a cluster: every master's scripts loaded, the slot map known), then a short loop.
  for (const pool of spec.pools) await pair(store, pool);
  await run(store, spec, 300);
  process.on('message', (message: ToStoreClient) => {
    if (message.type !== 'run') return;
    run(store, spec, message.durationMs).then(
      (counts) => send({ type: 'done', id: message.id, ...counts }),
      (error: unknown) => send({ type: 'failed', message: String(error) }),
    );
  });
  process.on('disconnect', () => {
    void store.close().finally(() => process.exit(0));
  });
  send({ type: 'ready' });
}

main().catch((error: unknown) => {
  send({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
  process.exit(1);
});
