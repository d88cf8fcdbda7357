/**
 * Client authentication: `api-key: KEY` or `Authorization: Bearer KEY`. The configured keys are held
 * as SHA-256 digests; a key in clear is kept only once a client has presented it (see `verified`).
 * The background lane's requests (Batch API lines this instance sends to its own listener) carry a
 * per-process secret instead (`LaneMarker`) and name the batch's client.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { ClientConfig } from '../../shared/config/schema.ts';
import type { ClientIdentity } from '../routing/proxied-request.ts';
import { LANE_CLIENT_HEADER, LANE_HEADER } from '../upstream/headers.ts';

export function presentedKey(headers: IncomingHttpHeaders): string | undefined {
  const apiKey = headers['api-key'];
  if (typeof apiKey === 'string' && apiKey) return apiKey;
  const authorization = headers.authorization;
  if (typeof authorization === 'string' && /^bearer\s+/i.test(authorization))
    return authorization.replace(/^bearer\s+/i, '').trim() || undefined;
  return undefined;
}

function digest(key: string): string {
  return createHash('sha256').update(key).digest('base64');
}

export class ClientAuth {
  private readonly byDigest = new Map<string, ClientIdentity>();
  /** The same identities by name, for the lane's requests (which name their batch's client). */
  private readonly byName = new Map<string, ClientIdentity>();
  /**
   * Keys already seen to be valid, so a client's every request does not hash its key again (a
   * SHA-256 per request was a few percent of the gateway's CPU). Bounded: only keys that matched a
   * configured client enter, so it holds at most one entry per client key.
   */
  private readonly verified = new Map<string, ClientIdentity>();
  readonly enabled: boolean;

  constructor(clients: readonly ClientConfig[] | undefined) {
    this.enabled = clients !== undefined && clients.length > 0;
    for (const client of clients ?? []) {
      const identity = { name: client.name, tpm: client.tpm, rpm: client.rpm };
      this.byDigest.set(digest(client.apiKey), identity);
      this.byName.set(client.name, identity);
    }
  }

  /** The configured client of that name (a batch's owner), or undefined; anonymous when there is no client auth. */
  named(name: string | undefined): ClientIdentity | undefined {
    if (!this.enabled) return ANONYMOUS;
    return name === undefined ? undefined : this.byName.get(name);
  }

  /** The client a request belongs to, or undefined when the key is missing or unknown. */
  identify(headers: IncomingHttpHeaders): ClientIdentity | undefined {
    if (!this.enabled) return ANONYMOUS;
    const key = presentedKey(headers);
    if (key === undefined) return undefined;
    const known = this.verified.get(key);
    if (known) return known;
    const identity = this.byDigest.get(digest(key));
    if (identity) this.verified.set(key, identity);
    return identity;
  }
}

const ANONYMOUS: ClientIdentity = { name: 'anonymous' };

/** Constant-time comparison for the single admin key. */
export function keyMatches(presented: string | undefined, expected: string): boolean {
  if (presented === undefined) return false;
  const a = Buffer.from(digest(presented));
  const b = Buffer.from(digest(expected));
  return timingSafeEqual(a, b);
}

export { LANE_CLIENT_HEADER, LANE_HEADER };

/**
 * The background lane's mark. Each process draws its own secret, so only this process's lane can send
 * background requests to its listener: a request with a wrong or missing secret is an ordinary request,
 * authenticated by its key like any other (its lane headers are ignored).
 */
export class LaneMarker {
  private readonly secret: Buffer;

  constructor(secret: string = randomBytes(32).toString('base64url')) {
    this.secret = Buffer.from(secret);
  }

  /** The headers a lane request carries for a line of `client`'s batch. */
  headers(client: string): Record<string, string> {
    return { [LANE_HEADER]: this.secret.toString(), [LANE_CLIENT_HEADER]: client };
  }

  /** True when the request carries this process's secret (compared in constant time). */
  marks(headers: IncomingHttpHeaders): boolean {
    const presented = headers[LANE_HEADER];
    if (typeof presented !== 'string') return false;
    const given = Buffer.from(presented);
    return given.length === this.secret.length && timingSafeEqual(given, this.secret);
  }

  /** The client a marked request runs as: its configured identity, so its quota applies; undefined when unknown. */
  clientOf(headers: IncomingHttpHeaders, auth: ClientAuth): ClientIdentity | undefined {
    const name = headers[LANE_CLIENT_HEADER];
    return auth.named(typeof name === 'string' ? name : undefined);
  }
}
