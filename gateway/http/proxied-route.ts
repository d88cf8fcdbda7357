/**
 * Which client requests are proxied, and to what: the Azure-style route
 * `/openai/deployments/{pool}/{operation}` and the OpenAI-style `/openai/v1/{operation}` and
 * `/v1/{operation}` (the pool is then the body's `model`). Matched with plain string operations on
 * the hot path instead of the Express router; literal segments match case-insensitively and a
 * trailing slash is allowed, as Express's defaults did.
 */
import { isOperation, type Operation } from '../../shared/operation.ts';

export interface ProxiedRoute {
  operation: Operation;
  /** The pool named in the path (Azure style), already URL-decoded; undefined for OpenAI-style paths. */
  pool: string | undefined;
  /** The query string after `?`, or ''. */
  query: string;
}

const AZURE_PREFIX = '/openai/deployments/';
const OPENAI_PREFIXES = ['/openai/v1/', '/v1/'];

/** The route of a POST to a proxied path; undefined for anything else (left to the Express app), 'bad-path' for an undecodable pool. */
export function matchProxiedRoute(method: string | undefined, url: string | undefined): ProxiedRoute | 'bad-path' | undefined {
  if (method !== 'POST' || !url) return undefined;
  const queryAt = url.indexOf('?');
  let path = queryAt === -1 ? url : url.slice(0, queryAt);
  const query = queryAt === -1 ? '' : url.slice(queryAt + 1);
  if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
  // Clients send these paths in lower case; folding case is only needed when they do not.
  const lower = isLowerCaseAscii(path) ? path : path.toLowerCase();
  for (const prefix of OPENAI_PREFIXES) {
    if (!lower.startsWith(prefix)) continue;
    const operation = lower.slice(prefix.length);
    return isOperation(operation) ? { operation, pool: undefined, query } : undefined;
  }
  if (!lower.startsWith(AZURE_PREFIX)) return undefined;
  const rest = path.slice(AZURE_PREFIX.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return undefined;
  const operation = rest.slice(slash + 1).toLowerCase();
  if (!isOperation(operation)) return undefined;
  try {
    return { operation, pool: decodeURIComponent(rest.slice(0, slash)), query };
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
