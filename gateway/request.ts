/** What the gateway learns about a client request before it picks a deployment. */
import type { ClientIdentity } from './auth.ts';
import type { Pool } from './pools.ts';

export type Operation = 'chat/completions' | 'completions' | 'embeddings';

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
