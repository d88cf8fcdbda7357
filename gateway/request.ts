/** What the gateway learns about a client request before it picks a deployment. */
import type { Pool } from './pools.ts';

export type Operation = 'chat/completions' | 'completions' | 'embeddings';

export interface ProxiedRequest {
  requestId: string;
  client: string;
  pool: Pool;
  operation: Operation;
  /** The client's api-version, when it sent one. */
  apiVersion: string | undefined;
  /** The body as sent upstream (the client's bytes unless the gateway had to change a field). */
  body: Buffer;
  stream: boolean;
  estimatedTokens: number;
  startedAt: number;
}
