/**
 * The latest probe of each deployment, for the status page and /admin/pools: one run is taken by one
 * instance, so what it found is kept in Redis (a hash beside the lane's keys) for every instance to show.
 */
import type { Cluster, Redis } from 'ioredis';
import type { ProbeReport, ProbeResult } from './probe-run.ts';

export interface LastProbe {
  /** Epoch ms the run that sent it ended. */
  at: number;
  result: ProbeResult;
}

/** A deployment not probed for this long has no latest probe worth showing; the hash goes with it. */
const KEPT_MS = 24 * 60 * 60_000;

export class ProbeLog {
  private readonly redis: Redis | Cluster;
  private readonly key: string;

  /** `prefix`: the lane's (one hash tag with its queues on Redis Cluster). */
  constructor(redis: Redis | Cluster, prefix: string) {
    this.redis = redis;
    this.key = `${prefix}:probes:last`;
  }

  async record(reports: readonly ProbeReport[], at = Date.now()): Promise<void> {
    if (reports.length === 0) return;
    const fields = reports.flatMap((r) => [fieldOf(r.pool, r.deployment), JSON.stringify({ at, result: r.result })]);
    await this.redis
      .multi()
      .hset(this.key, ...fields)
      .pexpire(this.key, KEPT_MS)
      .exec();
  }

  /** pool → deployment → its latest probe. */
  async read(): Promise<Map<string, Map<string, LastProbe>>> {
    const all = await this.redis.hgetall(this.key);
    const byPool = new Map<string, Map<string, LastProbe>>();
    for (const [field, value] of Object.entries(all)) {
      const [pool, deployment] = field.split('/').map(decodeURIComponent) as [string, string];
      try {
        const probe = JSON.parse(value) as LastProbe;
        if (!byPool.has(pool)) byPool.set(pool, new Map());
        byPool.get(pool)!.set(deployment, probe);
      } catch {
        // a field from another version: not shown
      }
    }
    return byPool;
  }
}

function fieldOf(pool: string, deployment: string): string {
  return `${encodeURIComponent(pool)}/${encodeURIComponent(deployment)}`;
}
