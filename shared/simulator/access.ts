/**
 * What every Azure route checks before the deployment is known: the api-version rules of the
 * classic and v1 surfaces, the key (api-key or Bearer), the JSON body; and the record a test reads.
 */
import type { IncomingMessage } from 'node:http';
import type { RecordedRequest } from './types.ts';

const DATED_API_VERSION = /^(\d{4}-\d{2}-\d{2})(?:-preview)?$/;
const V1_API_VERSIONS = new Set(['preview', 'latest', 'v1']);

/** Classic routes (`/openai/deployments/...`, `/openai/responses`): a dated api-version is required. */
export function datedApiVersion(apiVersion: string | null): string | null {
  if (apiVersion === null) return null;
  const dated = DATED_API_VERSION.exec(apiVersion);
  return dated === null ? null : (dated[1] as string);
}

/** `/openai/v1/...`: none, `preview`, `latest`, `v1` or a dated version (accepted and ignored). */
export function v1ApiVersionAccepted(apiVersion: string | null): boolean {
  return apiVersion === null || V1_API_VERSIONS.has(apiVersion) || DATED_API_VERSION.test(apiVersion);
}

/** 'api-key' or 'bearer' when a configured key came in either header; null otherwise. */
export function authenticate(req: IncomingMessage, apiKeys: ReadonlySet<string>): 'api-key' | 'bearer' | null {
  const apiKey = req.headers['api-key'];
  if (typeof apiKey === 'string' && apiKeys.has(apiKey)) return 'api-key';
  const authorization = req.headers.authorization;
  if (authorization !== undefined && authorization.startsWith('Bearer ') && apiKeys.has(authorization.slice(7))) return 'bearer';
  return null;
}

export function parseJsonObject(raw: Buffer): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(raw.toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

export interface RecordFields {
  req: IncomingMessage;
  path: string;
  apiVersion: string | null;
  auth: 'api-key' | 'bearer';
  requestId: string;
  model: string | null;
  references?: string[];
}

export function newRecord(fields: RecordFields): RecordedRequest {
  const clientRequestId = fields.req.headers['x-request-id'];
  return {
    at: Date.now(),
    method: fields.req.method ?? 'POST',
    path: fields.path,
    apiVersion: fields.apiVersion,
    auth: fields.auth,
    clientRequestId: typeof clientRequestId === 'string' ? clientRequestId : null,
    requestId: fields.requestId,
    model: fields.model,
    references: fields.references ?? [],
    stream: false,
    status: 0,
  };
}
