/**
 * A Responses or conversations call as it goes upstream: ids restored to Azure's own, the path below
 * `/openai[/v1]/`, and the body, whose `model` becomes the chosen deployment's name (Azure's v1 API
 * reads the deployment from it; the client named a pool).
 */

export interface StatefulCall {
  /** As the openai SDK names it: `responses.create`, `conversations.items.list`, … */
  name: string;
  method: 'GET' | 'POST' | 'DELETE';
  /** Path below `/openai[/v1]/`, ids restored, each segment URL-encoded. */
  subpath: string;
  /** The client's query without its api-version, ids restored; '' or starts with '&'. */
  query: string;
  /** The client's api-version, passed on. */
  apiVersion: string | undefined;
  /** The AzureOpenAI client's style (`/openai/responses?api-version=2025-04-01-preview`) instead of the v1 API. */
  dated: boolean;
  /** The body with ids restored; undefined for calls without one. */
  body: Record<string, unknown> | undefined;
  /** `deployment`: `model` becomes the deployment's name; `drop`: it only named the pool (conversations). */
  model: 'deployment' | 'drop';
  /** Each upstream id this call names, with the id the client sent: an error that quotes it is given the client's back. */
  restored: ReadonlyMap<string, string>;
  /** The body as sent, per deployment name (one attempt each, so at most maxAttempts entries). */
  readonly bodies: Map<string, Buffer>;
}

const EMPTY = Buffer.alloc(0);

export function statefulPath(call: StatefulCall, basePath: string): string {
  if (call.dated) return `${basePath}/openai/${call.subpath}?api-version=${encodeURIComponent(call.apiVersion ?? '')}${call.query}`;
  const version = call.apiVersion === undefined ? '' : `api-version=${encodeURIComponent(call.apiVersion)}`;
  const query = `${version}${version ? call.query : call.query.slice(1)}`;
  return `${basePath}/openai/v1/${call.subpath}${query ? `?${query}` : ''}`;
}

export function statefulBody(call: StatefulCall, deploymentName: string): Buffer {
  if (!call.body) return EMPTY;
  const key = call.model === 'deployment' ? deploymentName : '';
  let body = call.bodies.get(key);
  if (!body) {
    const { model: _model, ...rest } = call.body;
    body = Buffer.from(JSON.stringify(call.model === 'deployment' ? { ...call.body, model: deploymentName } : rest));
    call.bodies.set(key, body);
  }
  return body;
}
