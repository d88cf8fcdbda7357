/**
 * Redis key layout. Every key of a pool carries the hash tag `{pool:NAME}`, and every key of a client the
 * tag `{client:NAME}`, so one script can touch all of them on Redis Cluster. Names and ids are URI-encoded
 * so that `:` `{` `}` in them cannot make two different keys collide or move a key out of its slot.
 *
 *   PREFIX{pool:NAME}:rr                round-robin cursor (string, INCR)
 *   PREFIX{pool:NAME}:queue             wait queue, first come first served: ZSET ticket → enqueue time
 *                                       (µs by the Redis clock, nudged past the tail so order is strict)
 *   PREFIX{pool:NAME}:queue:deadlines   ZSET ticket → deadline (epoch ms); both queue keys expire with the
 *                                       latest deadline
 *   PREFIX{pool:NAME}:dep:ID            deployment state hash: cd (cooldown until), ou (circuit open until),
 *                                       pl (probe lease id), pd (probe deadline), dr (drained since: no
 *                                       expiry while set), rs (latest manual reset), ss (slow start since:
 *                                       the hash is kept SLOW_START_MEMORY_MS after it)
 *   PREFIX{pool:NAME}:dep:ID:leases     live leases: ZSET leaseId → deadline (epoch ms)
 *   PREFIX{pool:NAME}:dep:ID:win        usage window hash, a ring of 60 bucket slots: h (newest bucket),
 *                                       t / r / s (tokens, requests, requests in the short window),
 *                                       t<k> / r<k> (counts of the bucket b in the window with b % 60 = k)
 *   PREFIX{client:NAME}:win             a client's quota window: the same hash as a deployment's window
 */

export interface DeploymentKeys {
  state: string;
  leases: string;
  window: string;
}

export interface QueueKeys {
  /** ticket → enqueue time: the order. */
  order: string;
  /** ticket → deadline. */
  deadlines: string;
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

  queue(pool: string): QueueKeys {
    const order = `${this.poolTag(pool)}:queue`;
    return { order, deadlines: `${order}:deadlines` };
  }

  clientTag(client: string): string {
    return `${this.prefix}{client:${encodeURIComponent(client)}}`;
  }

  clientWindow(client: string): string {
    return `${this.clientTag(client)}:win`;
  }

  deployment(pool: string, deploymentId: string): DeploymentKeys {
    const state = `${this.poolTag(pool)}:dep:${encodeURIComponent(deploymentId)}`;
    return { state, leases: `${state}:leases`, window: `${state}:win` };
  }
}
