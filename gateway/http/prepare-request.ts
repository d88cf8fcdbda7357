/**
 * Everything decided about a proxied request before a deployment is chosen: the client (auth), the
 * body (within its limits, JSON), the pool (from the path or `model`), and the arrival estimate.
 * Each refusal is answered here, Azure-shaped; what passes becomes a ProxiedRequest.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { GatewaySettings } from '../../shared/config/schema.ts';
import { backgroundShare, reducedLimit } from '../../shared/store/background.ts';
import { errors, sendError } from '../errors.ts';
import type { Pool, ResourceDirectory } from '../pools.ts';
import { estimateTokens, largestTokenBudget } from '../routing/estimate.ts';
import type { ProxiedRequest } from '../routing/proxied-request.ts';
import { withUsageRequested } from '../upstream/usage-stream.ts';
import type { ClientAuth, LaneMarker } from './auth.ts';
import { closeLingering } from './lingering-close.ts';
import { apiVersionOf, type ProxiedRoute } from './proxied-route.ts';
import { noteClient, noteLane } from './refusal-log.ts';
import { BodyError, readRequestBody } from './request-body.ts';
import { prepareStateful } from './stateful-request.ts';

export interface PrepareDeps {
  settings: GatewaySettings;
  auth: ClientAuth;
  pools: ReadonlyMap<string, Pool>;
  resources: ResourceDirectory;
  /** The config's background section (background.reserve); absent → the schema's default reserve. */
  config?: { readonly background: { readonly reserve: number } };
}

/** background.reserve when the config has no background section (the schema's default). */
const DEFAULT_RESERVE = 0.3;

/** The request to route, or undefined when it was answered (refused) already. */
export async function prepareRequest(
  req: IncomingMessage,
  res: ServerResponse,
  route: ProxiedRoute,
  requestId: string,
  deps: PrepareDeps,
  lane?: LaneMarker,
): Promise<ProxiedRequest | undefined> {
  // The lane's own requests run as their batch's client; a wrong secret is no mark at all.
  const background = lane?.marks(req.headers) ?? false;
  if (background) noteLane(res);
  const client = background ? lane!.clientOf(req.headers, deps.auth) : deps.auth.identify(req.headers);
  if (!client) return void sendError(res, errors.unauthorized());
  noteClient(res, client.name);
  let raw: Buffer;
  try {
    // A GET or DELETE carries no body: whatever a client sent with one is not read.
    raw =
      route.stateful?.hasBody === false
        ? Buffer.alloc(0)
        : await readRequestBody(req, deps.settings.maxBodyBytes, deps.settings.bodyTimeoutMs);
  } catch (error) {
    return void refuseBody(req, res, error, deps.settings);
  }
  // Calls by id and on conversations may come without a body; everything else needs a JSON object.
  const optional = route.stateful !== undefined && route.operation === undefined;
  const body = optional && raw.length === 0 ? {} : parseBody(res, raw);
  if (!body) return undefined;
  const { operation } = route;
  const apiVersion = apiVersionOf(route.query);
  const common = {
    requestId,
    client,
    operation,
    apiVersion,
    stream: body.stream === true,
    startedAt: Date.now(),
    background,
    backgroundReserve: 0,
  };
  if (route.stateful) {
    const input = {
      route: route.stateful,
      pathPool: route.pool,
      body: route.stateful.hasBody ? body : undefined,
      query: route.query,
      apiVersion,
    };
    // The AzureOpenAI client's Responses calls carry a dated api-version on /openai/…; upstream gets the same style.
    const prepared = prepareStateful({ ...input, dated: route.style !== 'v1' && apiVersion !== undefined }, deps.pools, deps.resources);
    if ('status' in prepared) return void sendError(res, prepared);
    const { pool, call, affinity } = prepared;
    const estimatedTokens = operation ? estimateTokens(pool, operation, body) : 0;
    const backgroundReserve = background ? reserveOf(pool, deps) : 0;
    if (!admissible(res, pool, estimatedTokens, backgroundReserve, affinity?.excluded)) return undefined;
    return { ...common, backgroundReserve, pool, body: raw, bodyWithUsage: undefined, estimatedTokens, stateful: call, affinity };
  }
  const pool = poolOf(res, route, body, deps.pools);
  if (!pool) return undefined;
  const estimatedTokens = estimateTokens(pool, operation!, body);
  const backgroundReserve = background ? reserveOf(pool, deps) : 0;
  if (!admissible(res, pool, estimatedTokens, backgroundReserve)) return undefined;
  return {
    ...common,
    backgroundReserve,
    pool,
    body: raw,
    bodyWithUsage: operation === 'embeddings' ? undefined : withUsageRequested(body),
    estimatedTokens,
    stateful: undefined,
    affinity: undefined,
  };
}

/** The share of the pool's budgets a background request leaves to interactive ones. */
function reserveOf(pool: Pool, deps: PrepareDeps): number {
  return pool.config.background?.reserve ?? deps.config?.background.reserve ?? DEFAULT_RESERVE;
}

/**
 * False (answered 400) when no deployment the request may go to could ever hold its estimate. A
 * background request sees every budget cut by its reserve: a line above that would wait forever.
 */
function admissible(res: ServerResponse, pool: Pool, estimatedTokens: number, reserve: number, excluded?: readonly string[]): boolean {
  const full = largestTokenBudget(pool, excluded);
  const largest = full === undefined || reserve === 0 ? full : reducedLimit(full, backgroundShare({ reserve }));
  if (largest === undefined || estimatedTokens <= largest) return true;
  sendError(res, errors.overBudget(pool.name, estimatedTokens, largest));
  return false;
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
