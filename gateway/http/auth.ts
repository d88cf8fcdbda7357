/**
 * Client authentication: `api-key: KEY` or `Authorization: Bearer KEY`. The configured keys are held
 * as SHA-256 digests; a key in clear is kept only once a client has presented it (see `verified`).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { ClientConfig } from '../../shared/config/schema.ts';
import type { ClientIdentity } from '../routing/proxied-request.ts';

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
  /**
   * Keys already seen to be valid, so a client's every request does not hash its key again (a
   * SHA-256 per request was a few percent of the gateway's CPU). Bounded: only keys that matched a
   * configured client enter, so it holds at most one entry per client key.
   */
  private readonly verified = new Map<string, ClientIdentity>();
  readonly enabled: boolean;

  constructor(clients: readonly ClientConfig[] | undefined) {
    this.enabled = clients !== undefined && clients.length > 0;
    for (const client of clients ?? []) this.byDigest.set(digest(client.apiKey), { name: client.name, tpm: client.tpm, rpm: client.rpm });
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
