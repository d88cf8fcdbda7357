/**
 * Everything decided about a proxied request before a deployment is chosen: the client (auth), the
 * body (within its limits, JSON), the pool (from the path or `model`), and the arrival estimate.
 * Each refusal is answered here, Azure-shaped; what passes becomes a ProxiedRequest.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { GatewaySettings } from '../../shared/config/schema.ts';
import { errors, sendError } from '../errors.ts';
import type { Pool } from '../pools.ts';
import { estimateTokens } from '../routing/estimate.ts';
import type { ProxiedRequest } from '../routing/proxied-request.ts';
import { withUsageRequested } from '../upstream/usage-stream.ts';
import type { ClientAuth } from './auth.ts';
import { closeLingering } from './lingering-close.ts';
import { apiVersionOf, type ProxiedRoute } from './proxied-route.ts';
import { BodyError, readRequestBody } from './request-body.ts';

export interface PrepareDeps {
  settings: GatewaySettings;
  auth: ClientAuth;
  pools: ReadonlyMap<string, Pool>;
}

/** The request to route, or undefined when it was answered (refused) already. */
export async function prepareRequest(
  req: IncomingMessage,
  res: ServerResponse,
  route: ProxiedRoute,
  requestId: string,
  deps: PrepareDeps,
): Promise<ProxiedRequest | undefined> {
  const client = deps.auth.identify(req.headers);
  if (!client) return void sendError(res, errors.unauthorized());
  let raw: Buffer;
  try {
    raw = await readRequestBody(req, deps.settings.maxBodyBytes, deps.settings.bodyTimeoutMs);
  } catch (error) {
    return void refuseBody(req, res, error, deps.settings);
  }
  const body = parseBody(res, raw);
  if (!body) return undefined;
  const pool = poolOf(res, route, body, deps.pools);
  if (!pool) return undefined;
  const { operation } = route;
  return {
    requestId,
    client,
    pool,
    operation,
    apiVersion: apiVersionOf(route.query),
    body: raw,
    bodyWithUsage: operation === 'embeddings' ? undefined : withUsageRequested(body),
    stream: body.stream === true,
    estimatedTokens: estimateTokens(pool, operation, body),
    startedAt: Date.now(),
  };
}

/** The body as a JSON object, or undefined (answered 400). */
function parseBody(res: ServerResponse, raw: Buffer): Record<string, unknown> | undefined {
  if (raw.length === 0) return void sendError(res, errors.badRequest('The request body is empty; send a JSON object.'));
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    return void sendError(res, errors.badRequest('The request body is not valid JSON.'));
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) {
    return void sendError(res, errors.badRequest('The request body must be a JSON object.'));
  }
  return json as Record<string, unknown>;
}

/** The pool the path names (Azure style) or the body's `model` (OpenAI style); undefined when answered 400/404. */
function poolOf(
  res: ServerResponse,
  route: ProxiedRoute,
  body: Record<string, unknown>,
  pools: ReadonlyMap<string, Pool>,
): Pool | undefined {
  let name: string;
  if (route.pool !== undefined) name = route.pool;
  else if (typeof body.model === 'string' && body.model) name = body.model;
  else return void sendError(res, errors.badRequest('The request names no model: set "model" to a pool of this gateway.'));
  const pool = pools.get(name);
  if (!pool) sendError(res, errors.unknownPool(name));
  return pool;
}

function refuseBody(req: IncomingMessage, res: ServerResponse, error: unknown, settings: GatewaySettings): void {
  const failure = error instanceof BodyError ? error.failure : 'aborted';
  if (failure === 'aborted') return void res.destroy();
  if (failure === 'too-large' || failure === 'too-slow') {
    // The rest of the body is not read: the connection cannot carry another request after it. It
    // closes lingering, so that a client still sending reads this answer instead of a reset.
    closeLingering(req, res);
    return sendError(
      res,
      failure === 'too-large' ? errors.tooLarge(settings.maxBodyBytes) : errors.arrivalTimeout('body', settings.bodyTimeoutMs),
    );
  }
  if (failure === 'unsupported-encoding') return sendError(res, errors.unsupportedEncoding());
  sendError(res, errors.badRequest('The request body could not be decoded.'));
}
