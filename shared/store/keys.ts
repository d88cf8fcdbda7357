/**
 * Redis key layout. Every key of a pool carries the hash tag `{pool:NAME}`, so one script can touch all
 * of them on Redis Cluster. Names and ids are URI-encoded so that `:` `{` `}` in them cannot make two
 * different keys collide or move a key out of its pool's slot.
 *
 *   PREFIX{pool:NAME}:rr                round-robin cursor (string, INCR)
 *   PREFIX{pool:NAME}:dep:ID            deployment state hash: cd (cooldown until), ou (circuit open until),
 *                                       pl (probe lease id), pd (probe deadline)
 *   PREFIX{pool:NAME}:dep:ID:leases     live leases: ZSET leaseId → deadline (epoch ms)
 *   PREFIX{pool:NAME}:dep:ID:win        usage window hash, a ring of 60 bucket slots: h (newest bucket),
 *                                       t / r / s (tokens, requests, requests in the short window),
 *                                       t<k> / r<k> (counts of the bucket b in the window with b % 60 = k)
 */

export interface DeploymentKeys {
  state: string;
  leases: string;
  window: string;
}

export class KeyLayout {
  readonly prefix: string;

  constructor(prefix: string) {
    this.prefix = prefix;
  }

  poolTag(pool: string): string {
    return `${this.prefix}{pool:${encodeURIComponent(pool)}}`;
  }

  cursor(pool: string): string {
    return `${this.poolTag(pool)}:rr`;
  }

  deployment(pool: string, deploymentId: string): DeploymentKeys {
    const state = `${this.poolTag(pool)}:dep:${encodeURIComponent(deploymentId)}`;
    return { state, leases: `${state}:leases`, window: `${state}:win` };
  }
}
