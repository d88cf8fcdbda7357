/**
 * The Responses and Conversations routes, under /openai/v1/ (no api-version needed) and under
 * /openai/ with a dated api-version (the AzureOpenAI client's `/openai/responses?api-version=…`).
 */

export type StatefulKind =
  | 'responses.create'
  | 'responses.get'
  | 'responses.delete'
  | 'responses.cancel'
  | 'responses.input_items'
  | 'conversations.create'
  | 'conversations.get'
  | 'conversations.update'
  | 'conversations.delete'
  | 'conversations.items.list'
  | 'conversations.items.create'
  | 'conversations.items.get'
  | 'conversations.items.delete';

export interface StatefulRoute {
  kind: StatefulKind;
  /** Under /openai/v1/ (true) or /openai/ with a dated api-version (false). */
  v1: boolean;
  /** The path after /openai/v1/ or /openai/, as Azure names it in "Invalid URL (POST /v1/…)". */
  rest: string;
  /** The response or conversation id in the path. */
  id: string | null;
  /** The conversation item id in the path. */
  itemId: string | null;
}

const V1_PREFIX = '/openai/v1/';
const DATED_PREFIX = '/openai/';

export function matchStatefulRoute(method: string | undefined, path: string): StatefulRoute | null {
  let rest: string;
  let v1: boolean;
  if (path.startsWith(V1_PREFIX)) {
    rest = path.slice(V1_PREFIX.length);
    v1 = true;
  } else if (path.startsWith(DATED_PREFIX) && !path.startsWith('/openai/deployments/')) {
    rest = path.slice(DATED_PREFIX.length);
    v1 = false;
  } else {
    return null;
  }
  // The hot path (chat, completions, embeddings) leaves here without splitting the path.
  if (!rest.startsWith('responses') && !rest.startsWith('conversations')) return null;
  const segments = rest.split('/');
  const [collection, rawId, sub, rawItemId, ...extra] = segments;
  if (extra.length > 0 || (collection !== 'responses' && collection !== 'conversations')) return null;
  const id = rawId === undefined ? null : decode(rawId);
  const itemId = rawItemId === undefined ? null : decode(rawItemId);
  if ((rawId !== undefined && id === null) || (rawItemId !== undefined && itemId === null)) return null;
  const route = (kind: StatefulKind): StatefulRoute => ({ kind, v1, rest, id, itemId });

  if (collection === 'responses') {
    if (id === null) return method === 'POST' ? route('responses.create') : null;
    if (sub === undefined) return method === 'GET' ? route('responses.get') : method === 'DELETE' ? route('responses.delete') : null;
    if (itemId !== null) return null;
    if (sub === 'input_items') return method === 'GET' ? route('responses.input_items') : null;
    if (sub === 'cancel') return method === 'POST' ? route('responses.cancel') : null;
    return null;
  }
  if (id === null) return method === 'POST' ? route('conversations.create') : null;
  if (sub === undefined) {
    if (method === 'GET') return route('conversations.get');
    if (method === 'POST') return route('conversations.update');
    return method === 'DELETE' ? route('conversations.delete') : null;
  }
  if (sub !== 'items') return null;
  if (itemId === null)
    return method === 'GET' ? route('conversations.items.list') : method === 'POST' ? route('conversations.items.create') : null;
  return method === 'GET' ? route('conversations.items.get') : method === 'DELETE' ? route('conversations.items.delete') : null;
}

/** A path segment, or null when it is empty or not valid percent-encoding. */
function decode(segment: string): string | null {
  if (segment === '') return null;
  try {
    return decodeURIComponent(segment);
  } catch {
    return null;
  }
}
