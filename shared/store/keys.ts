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
 *   PREFIX{pool:NAME}:inflight          in-flight hash: per deployment, its leases key → how many leases its
 *                                       ZSET holds, and `<leases key>|next` → no later than its earliest
 *                                       deadline (acquire counts from it in one read; lua/includes/leases.lua)
 *   PREFIX{pool:NAME}:states            state index hash: state key → when that state hash expires (epoch ms,
 *                                       -1 never), so acquire reads only the state hashes there are
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

/** Above this many remembered deployments the memo starts afresh (layouts come from config: far fewer). */
const MEMO_LIMIT = 10_000;

export class KeyLayout {
  readonly prefix: string;
  /** Deployment keys by pool and id: built once, not on every call (string building showed in profiles). */
  readonly #deployments = new Map<string, Map<string, DeploymentKeys>>();
  #remembered = 0;

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

  inflight(pool: string): string {
    return `${this.poolTag(pool)}:inflight`;
  }

  states(pool: string): string {
    return `${this.poolTag(pool)}:states`;
  }

  deployment(pool: string, deploymentId: string): DeploymentKeys {
    let byId = this.#deployments.get(pool);
    const known = byId?.get(deploymentId);
    if (known) return known;
    if (this.#remembered >= MEMO_LIMIT) {
      this.#deployments.clear();
      this.#remembered = 0;
      byId = undefined;
    }
    if (!byId) {
      byId = new Map();
      this.#deployments.set(pool, byId);
    }
    const state = `${this.poolTag(pool)}:dep:${encodeURIComponent(deploymentId)}`;
    const keys: DeploymentKeys = Object.freeze({ state, leases: `${state}:leases`, window: `${state}:win` });
    byId.set(deploymentId, keys);
    this.#remembered += 1;
    return keys;
  }
}
