/**
 * Client authentication: `api-key: KEY` or `Authorization: Bearer KEY`. Keys are held as SHA-256
 * digests, so the table of keys in memory never holds a client's key in clear after start-up.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { ClientConfig } from '../shared/config/schema.ts';

export interface ClientIdentity {
  name: string;
  tpm?: number;
  rpm?: number;
}

export function presentedKey(headers: IncomingHttpHeaders): string | undefined {
  const apiKey = headers['api-key'];
  if (typeof apiKey === 'string' && apiKey) return apiKey;
  const authorization = headers.authorization;
  if (typeof authorization === 'string' && /^bearer\s+/i.test(authorization)) return authorization.replace(/^bearer\s+/i, '').trim() || undefined;
  return undefined;
}

function digest(key: string): string {
  return createHash('sha256').update(key).digest('base64');
}

export class ClientAuth {
  private readonly byDigest = new Map<string, ClientIdentity>();
  readonly enabled: boolean;

  constructor(clients: readonly ClientConfig[] | undefined) {
    this.enabled = clients !== undefined && clients.length > 0;
    for (const client of clients ?? []) this.byDigest.set(digest(client.apiKey), { name: client.name, tpm: client.tpm, rpm: client.rpm });
  }

  /** The client a request belongs to, or undefined when the key is missing or unknown. */
  identify(headers: IncomingHttpHeaders): ClientIdentity | undefined {
    if (!this.enabled) return ANONYMOUS;
    const key = presentedKey(headers);
    return key === undefined ? undefined : this.byDigest.get(digest(key));
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
