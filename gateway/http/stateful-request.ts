/**
 * A Responses or conversations call before routing: the ids the client sent (path, query, body) are
 * restored to Azure's own, and the resource they were issued by pins the request (affinity). A
 * request that names no earlier state is routed freely, like a chat completion.
 */
import { errors, type AzureError } from '../errors.ts';
import type { Pool, ResourceDirectory } from '../pools.ts';
import { decodeId, decodeOpaque, ID_FIELDS } from '../resource-ids.ts';
import type { Affinity } from '../routing/proxied-request.ts';
import type { StatefulCall } from '../upstream/stateful-call.ts';
import type { StatefulRoute } from './proxied-route.ts';

const ID_FIELD_NAMES = new Set<string>(ID_FIELDS);
/** Ids are never deeper than this in a body; a deeper one is not looked into (a limit on what a client sends). */
const MAX_DEPTH = 32;

export interface StatefulRequest {
  pool: Pool;
  call: StatefulCall;
  affinity: Affinity | undefined;
}

export interface StatefulInput {
  route: StatefulRoute;
  /** The pool the path names (Azure's deployment-style route), if any. */
  pathPool: string | undefined;
  body: Record<string, unknown> | undefined;
  query: string;
  apiVersion: string | undefined;
  dated: boolean;
}

/** The call to route, or the error to answer. */
export function prepareStateful(
  input: StatefulInput,
  pools: ReadonlyMap<string, Pool>,
  resources: ResourceDirectory,
): StatefulRequest | AzureError {
  const ids = new IdRestorer();
  const segments = input.route.segments.map((segment, index) => (input.route.idSegments.includes(index) ? ids.pathId(segment) : segment));
  const query = restoredQuery(input.query, ids);
  if (input.body) ids.walk(input.body, 0);
  for (const field of ['previous_response_id', 'conversation'] as const) ids.required(input.body?.[field]);
  if (ids.failure) return ids.failure;

  const tags = [...ids.tags.keys()];
  if (tags.length > 1) {
    const hosts = tags.map((tag) => resources.hostOf(tag)).join(' and ');
    return errors.badRequest(`The request names state held on two Azure resources (${hosts}); one request can only use the state of one.`);
  }
  const tag = tags[0];
  const reference = tag === undefined ? undefined : ids.tags.get(tag)!;
  if (tag !== undefined && !resources.hostOf(tag)) return errors.unknownState(reference!);

  const pool = poolOf(input, pools, tag === undefined ? undefined : resources.poolFor(tag));
  if ('status' in pool) return pool;
  let affinity: Affinity | undefined;
  if (tag !== undefined) {
    const excluded = [...pool.deployments.values()].filter((d) => d.resourceTag !== tag).map((d) => d.config.id);
    const host = resources.hostOf(tag)!;
    if (excluded.length === pool.deployments.size) {
      return errors.badRequest(
        `${reference} lives on the Azure resource ${host}, where the pool ${pool.name} has no deployment; continue it with a pool that has one there.`,
      );
    }
    affinity = { reference: reference!, host, excluded };
  }
  const call: StatefulCall = {
    name: input.route.name,
    method: input.route.method,
    subpath: segments.map(encodeURIComponent).join('/'),
    query,
    apiVersion: input.apiVersion,
    dated: input.dated,
    body: input.body,
    model: input.route.name === 'responses.create' || input.route.name === 'responses.compact' ? 'deployment' : 'drop',
    restored: ids.restored,
    bodies: new Map(),
  };
  return { pool, call, affinity };
}

/** The pool: the path's, else `model`, else the one that holds the named state, else (a new conversation) the first. */
function poolOf(input: StatefulInput, pools: ReadonlyMap<string, Pool>, owner: Pool | undefined): Pool | AzureError {
  const model = input.body?.model;
  const name = input.pathPool ?? (typeof model === 'string' && model ? model : undefined);
  if (name !== undefined) return pools.get(name) ?? errors.unknownPool(name);
  if (owner) return owner;
  if (input.route.name === 'conversations.create') return pools.values().next().value!;
  return errors.badRequest('The request names no model: set "model" to a pool of this gateway.');
}

/** Restores the ids the gateway issued, noting the resource each names; the first problem found is kept. */
class IdRestorer {
  /** Resource tag → the first id (as the client sent it) that named it. */
  readonly tags = new Map<string, string>();
  /** Upstream id → the client's. */
  readonly restored = new Map<string, string>();
  failure: AzureError | undefined;

  /** An id of ours restored; any other string as it is. */
  restore(value: string): string {
    const decoded = decodeId(value);
    if (!decoded) return value;
    if (!this.tags.has(decoded.tag)) this.tags.set(decoded.tag, value);
    this.restored.set(decoded.upstreamId, value);
    return decoded.upstreamId;
  }

  /** Encrypted reasoning content handed out by the gateway, restored; any other string as it is. */
  restoreOpaque(value: string): string {
    const decoded = decodeOpaque(value);
    if (!decoded) return value;
    if (!this.tags.has(decoded.tag)) this.tags.set(decoded.tag, 'an encrypted reasoning item');
    return decoded.upstream;
  }

  /** A path names the state it acts on: an id not issued by this gateway cannot be routed anywhere. */
  pathId(value: string): string {
    const restored = this.restore(value);
    if (restored === value) this.failure ??= errors.unknownState(value);
    return restored;
  }

  /** `previous_response_id` and `conversation` must be ours too (already restored by the walk). */
  required(value: unknown): void {
    const id = typeof value === 'string' ? value : isRecord(value) && typeof value.id === 'string' ? value.id : undefined;
    if (id !== undefined && !this.restored.has(id)) this.failure ??= errors.unknownState(id);
  }

  walk(node: Record<string, unknown> | unknown[], depth: number): void {
    if (depth > MAX_DEPTH) return;
    if (Array.isArray(node)) {
      for (const item of node) if (item && typeof item === 'object') this.walk(item as Record<string, unknown>, depth + 1);
      return;
    }
    for (const [key, value] of Object.entries(node)) {
      if (typeof value === 'string') {
        if (ID_FIELD_NAMES.has(key)) node[key] = this.restore(value);
        else if (key === 'encrypted_content') node[key] = this.restoreOpaque(value);
      } else if (value && typeof value === 'object') {
        this.walk(value as Record<string, unknown>, depth + 1);
      }
    }
  }
}

/** The query without api-version (passed apart), ids restored (`after`, `before` cursors); '' or starting with '&'. */
function restoredQuery(query: string, ids: IdRestorer): string {
  if (!query) return '';
  let out = '';
  for (const [name, value] of new URLSearchParams(query)) {
    if (name === 'api-version') continue;
    out += `&${encodeURIComponent(name)}=${encodeURIComponent(ids.restore(value))}`;
  }
  return out;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
