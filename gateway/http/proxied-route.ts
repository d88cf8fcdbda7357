/**
 * Which client requests are proxied, and to what. Three ways to address the gateway, as clients do:
 * - `deployments`: Azure's classic `/openai/deployments/{pool}/{operation}?api-version=…`;
 * - `v1`: `/openai/v1/…` and `/v1/…` (the OpenAI client; Azure's v1 API), the pool is the body's `model`;
 * - `openai`: `/openai/{operation}` without `v1` (the Vercel AI SDK with `baseURL: …/openai`; the
 *   AzureOpenAI client's Responses calls, with an api-version).
 * Below the last two, the Responses API (`responses`, `responses/{id}[/input_items|/cancel]`,
 * `responses/compact`) and the conversations API (`conversations[/{id}[/items[/{item}]]]`) are
 * stateful calls: their state lives in one Azure resource (see resource-ids.ts).
 *
 * Matched with plain string operations on the hot path instead of the Express router; literal
 * segments match case-insensitively and a trailing slash is allowed, as Express's defaults did.
 */
import { isOperation, type Operation } from '../../shared/operation.ts';

export type RouteStyle = 'deployments' | 'v1' | 'openai';

/** A Responses or conversations call, named as in the openai SDK (`responses.retrieve`), with the ids its path names. */
export interface StatefulRoute {
  name: string;
  method: 'GET' | 'POST' | 'DELETE';
  /** The path's segments below `/openai[/v1]/`, URL-decoded, ids as the client sent them. */
  segments: string[];
  /** Which of `segments` are ids. */
  idSegments: number[];
  /** True when the call carries a JSON body. */
  hasBody: boolean;
}

export interface ProxiedRoute {
  /** The inference call whose prompt is estimated; undefined for calls by id and the conversations API. */
  operation: Operation | undefined;
  /** The pool named in the path (Azure style), already URL-decoded; undefined otherwise. */
  pool: string | undefined;
  /** The query string after `?`, or ''. */
  query: string;
  style: RouteStyle;
  /** Set for the Responses and conversations APIs. */
  stateful?: StatefulRoute;
}

const DEPLOYMENTS_PREFIX = '/openai/deployments/';
const PREFIXES: readonly [string, RouteStyle][] = [
  ['/openai/v1/', 'v1'],
  ['/v1/', 'v1'],
  ['/openai/', 'openai'],
];
const METHODS = new Set(['GET', 'POST', 'DELETE']);

/** The route of a proxied request; undefined for anything else (left to the Express app), 'bad-path' for an undecodable segment. */
export function matchProxiedRoute(method: string | undefined, url: string | undefined): ProxiedRoute | 'bad-path' | undefined {
  if (!method || !url || !METHODS.has(method)) return undefined;
  const queryAt = url.indexOf('?');
  let path = queryAt === -1 ? url : url.slice(0, queryAt);
  const query = queryAt === -1 ? '' : url.slice(queryAt + 1);
  if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
  // Clients send these paths in lower case; folding case is only needed when they do not.
  const lower = isLowerCaseAscii(path) ? path : path.toLowerCase();
  if (lower.startsWith(DEPLOYMENTS_PREFIX)) return deploymentsRoute(method, path, query);
  for (const [prefix, style] of PREFIXES) {
    if (!lower.startsWith(prefix)) continue;
    const rest = lower.slice(prefix.length);
    if (method === 'POST' && isOperation(rest)) {
      return { operation: rest, pool: undefined, query, style, ...(rest === 'responses' ? { stateful: createCall() } : {}) };
    }
    // Ids keep their case: segments are cut from the path as sent.
    const segments = decodeSegments(path.slice(prefix.length));
    if (segments === 'bad-path') return segments;
    const stateful = statefulRoute(method, segments);
    if (!stateful) return undefined;
    return { operation: stateful.name === 'responses.compact' ? 'responses' : undefined, pool: undefined, query, style, stateful };
  }
  return undefined;
}

function deploymentsRoute(method: string, path: string, query: string): ProxiedRoute | 'bad-path' | undefined {
  if (method !== 'POST') return undefined;
  const rest = path.slice(DEPLOYMENTS_PREFIX.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return undefined;
  const operation = rest.slice(slash + 1).toLowerCase();
  if (!isOperation(operation)) return undefined;
  let pool: string;
  try {
    pool = decodeURIComponent(rest.slice(0, slash));
  } catch {
    return 'bad-path';
  }
  // `/deployments/{pool}/responses` is what the Vercel AI SDK sends with useDeploymentBasedUrls.
  return { operation, pool, query, style: 'deployments', ...(operation === 'responses' ? { stateful: createCall() } : {}) };
}

function createCall(): StatefulRoute {
  return { name: 'responses.create', method: 'POST', segments: ['responses'], idSegments: [], hasBody: true };
}

/** The Responses and conversations calls by their path's shape; undefined for any other path or method. */
function statefulRoute(method: string, segments: string[]): StatefulRoute | undefined {
  const normal = lowerLiterals(segments);
  const [collection, id, sub, subId] = normal;
  const call = (name: string, allowed: StatefulRoute['method'], idSegments: number[]): StatefulRoute | undefined =>
    method === allowed ? { name, method: allowed, segments: normal, idSegments, hasBody: method === 'POST' } : undefined;
  if (collection === 'responses') {
    if (segments.length === 2 && id === 'compact') return call('responses.compact', 'POST', []);
    if (segments.length === 2) return method === 'GET' ? call('responses.retrieve', 'GET', [1]) : call('responses.delete', 'DELETE', [1]);
    if (segments.length === 3 && sub === 'input_items') return call('responses.input_items', 'GET', [1]);
    if (segments.length === 3 && sub === 'cancel') return call('responses.cancel', 'POST', [1]);
    return undefined;
  }
  if (collection !== 'conversations') return undefined;
  if (segments.length === 1) return call('conversations.create', 'POST', []);
  if (segments.length === 2) {
    if (method === 'GET') return call('conversations.retrieve', 'GET', [1]);
    return method === 'POST' ? call('conversations.update', 'POST', [1]) : call('conversations.delete', 'DELETE', [1]);
  }
  if (sub !== 'items') return undefined;
  if (segments.length === 3)
    return method === 'GET' ? call('conversations.items.list', 'GET', [1]) : call('conversations.items.create', 'POST', [1]);
  if (segments.length === 4 && subId) {
    return method === 'GET' ? call('conversations.items.retrieve', 'GET', [1, 3]) : call('conversations.items.delete', 'DELETE', [1, 3]);
  }
  return undefined;
}

/** Literal segments (even positions) in lower case, ids as they came. */
function lowerLiterals(segments: string[]): string[] {
  return segments.map((segment, index) => (index % 2 === 0 ? segment.toLowerCase() : segment));
}

function decodeSegments(path: string): string[] | 'bad-path' {
  try {
    return path.split('/').map((segment) => decodeURIComponent(segment));
  } catch {
    return 'bad-path';
  }
}

function isLowerCaseAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if ((code >= 65 && code <= 90) || code > 127) return false;
  }
  return true;
}

/** The client's api-version, when its query names exactly one. */
export function apiVersionOf(query: string): string | undefined {
  if (!query.includes('api-version=')) return undefined;
  const values = new URLSearchParams(query).getAll('api-version');
  return values.length === 1 ? values[0] : undefined;
}
