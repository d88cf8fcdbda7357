/** What the gateway learns about a client request before it picks a deployment. */
import type { Operation } from '../../shared/operation.ts';
import type { Pool } from '../pools.ts';
import type { StatefulCall } from '../upstream/stateful-call.ts';

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
  /** The inference call estimated; undefined for Responses calls by id and the conversations API. */
  operation: Operation | undefined;
  /** The client's api-version, when it sent one. */
  apiVersion: string | undefined;
  /** The body as sent upstream (the client's bytes unless the gateway had to change a field). */
  body: Buffer;
  /** For streams that did not ask for usage: the body asking for it, so accounting stays exact. */
  bodyWithUsage: Buffer | undefined;
  stream: boolean;
  estimatedTokens: number;
  startedAt: number;
  /** Responses and conversations calls: what goes upstream (ids restored). */
  stateful: StatefulCall | undefined;
  /** A request that names earlier state: it may only go to the resource that holds it. */
  affinity: Affinity | undefined;
  /**
   * A Batch API line sent by this instance's background lane (http/auth.ts LaneMarker): admitted only
   * under (1 − backgroundReserve) of every budget, never waiting, and answered at once when refused.
   */
  background: boolean;
  /** The share of every budget a background request leaves to interactive ones (the pool's, else background.reserve); 0 for interactive requests. */
  backgroundReserve: number;
}

/** Where a request's earlier state lives: deployments elsewhere are never tried for it. */
export interface Affinity {
  /** The id that pins it, as the client sent it (for messages). */
  reference: string;
  /** The resource's host (for messages). */
  host: string;
  /** Deployments of the pool on other resources. */
  excluded: string[];
}
