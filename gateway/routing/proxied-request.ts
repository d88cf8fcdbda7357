/** What the gateway learns about a client request before it picks a deployment. */
import type { Operation } from '../../shared/operation.ts';
import type { Pool } from '../pools.ts';

/** The client a request belongs to (http/auth.ts decides), with its quota when it has one. */
export interface ClientIdentity {
  name: string;
  tpm?: number;
  rpm?: number;
}

export interface ProxiedRequest {
  requestId: string;
  client: ClientIdentity;
  pool: Pool;
  operation: Operation;
  /** The client's api-version, when it sent one. */
  apiVersion: string | undefined;
  /** The body as sent upstream (the client's bytes unless the gateway had to change a field). */
  body: Buffer;
  /** For streams that did not ask for usage: the body asking for it, so accounting stays exact. */
  bodyWithUsage: Buffer | undefined;
  stream: boolean;
  estimatedTokens: number;
  startedAt: number;
}
