/**
 * The Azure OpenAI surface: routing, api-version, auth, validation, faults, rate limits, and the
 * timed response. The order of checks follows what Azure answers first: an unknown path or
 * api-version is a 404 before auth is looked at; a bad key is a 401 before the deployment is.
 * The Responses and Conversations APIs (stateful, routed by the ids they name) live in responses-api/.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { authenticate, datedApiVersion, newRecord, parseJsonObject, v1ApiVersionAccepted } from './access.ts';
import type { ApiContext } from './context.ts';
import type { DeploymentRuntime } from './deployments.ts';
import { DEPLOYMENT_NOT_FOUND, INVALID_JSON, RESOURCE_NOT_FOUND, UNAUTHORIZED, invalidRequest } from './errors.ts';
import { Exchange, baseHeaders, cutFaultOf, sendError } from './exchange.ts';
import { pathOf, queryParam, readBody } from './http-utils.ts';
import { operationRefusal } from './model-operations.ts';
import { handleStatefulRequest, matchStatefulRoute } from './responses-api/handler.ts';
import { OPERATION_NAMES, countPromptTokens, estimateCost, parseRequest, type Operation, type SimRequest } from './requests.ts';
import {
  chatCompletionBody,
  completionTokensOf,
  embeddingsBody,
  nextCompletionId,
  textCompletionBody,
  type Generation,
} from './responses.ts';
import { buildStreamScript } from './streaming.ts';
import { completionText } from './tokens.ts';
import type { Fault } from './types.ts';

export type { ApiContext } from './context.ts';

interface Route {
  operation: Operation;
  /** From the path on classic routes; null on /openai/v1 (the body's `model` names it). */
  deployment: string | null;
}

/** The stateless inference operations: `responses` has its own routes (responses-api/routes.ts). */
const INFERENCE_OPERATIONS = new Set<Operation>(['chat/completions', 'completions', 'embeddings']);
const CLASSIC_PREFIX = '/openai/deployments/';
const V1_PREFIX = '/openai/v1/';

function inferenceOperation(suffix: string): Operation | null {
  return INFERENCE_OPERATIONS.has(suffix as Operation) ? (suffix as Operation) : null;
}

export function matchRoute(path: string): Route | null {
  if (path.startsWith(V1_PREFIX)) {
    const operation = inferenceOperation(path.slice(V1_PREFIX.length));
    return operation ? { operation, deployment: null } : null;
  }
  if (!path.startsWith(CLASSIC_PREFIX)) return null;
  const rest = path.slice(CLASSIC_PREFIX.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return null;
  const operation = inferenceOperation(rest.slice(slash + 1));
  if (!operation) return null;
  let deployment: string;
  try {
    deployment = decodeURIComponent(rest.slice(0, slash));
  } catch {
    return null;
  }
  return { operation, deployment };
}

function apiVersionAccepted(route: Route, apiVersion: string | null): boolean {
  return route.deployment === null ? v1ApiVersionAccepted(apiVersion) : datedApiVersion(apiVersion) !== null;
}

export async function handleApiRequest(context: ApiContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = req.url ?? '/';
  const path = pathOf(url);
  const requestId = randomUUID();
  const stateful = matchStatefulRoute(req.method, path);
  if (stateful !== null) return handleStatefulRequest(context, stateful, req, res, url, path, requestId);
  const route = req.method === 'POST' ? matchRoute(path) : null;
  if (route === null) return sendError(res, RESOURCE_NOT_FOUND, baseHeaders(requestId, null));
  const apiVersion = queryParam(url, 'api-version');
  if (!apiVersionAccepted(route, apiVersion)) return sendError(res, RESOURCE_NOT_FOUND, baseHeaders(requestId, null));
  const auth = authenticate(req, context.apiKeys);
  if (auth === null) return sendError(res, UNAUTHORIZED, baseHeaders(requestId, null));

  let raw: Buffer;
  try {
    raw = await readBody(req);
  } catch {
    return; // The client left while sending; there is no one to answer.
  }

  let body: Record<string, unknown> | null = null;
  let deployment: DeploymentRuntime | undefined;
  if (route.deployment !== null) {
    deployment = context.deployments.get(route.deployment);
    if (deployment === undefined) return sendError(res, DEPLOYMENT_NOT_FOUND, baseHeaders(requestId, null));
  } else {
    // On /openai/v1 the body names the deployment, so it must parse first.
    body = parseJsonObject(raw);
    if (body === null) return sendError(res, INVALID_JSON, baseHeaders(requestId, null));
    if (typeof body.model !== 'string' || body.model === '') {
      return sendError(
        res,
        invalidRequest("Missing required parameter: 'model'.", 'model', 'missing_required_parameter'),
        baseHeaders(requestId, null),
      );
    }
    deployment = context.deployments.get(body.model);
    if (deployment === undefined) return sendError(res, DEPLOYMENT_NOT_FOUND, baseHeaders(requestId, null));
  }

  const record = newRecord({ req, path, apiVersion, auth, requestId, model: deployment.name });
  const exchange = new Exchange(deployment, res, record);
  // Azure refuses the operation from the deployment's model alone, before it reads the body.
  const refusal = operationRefusal(route.operation, deployment.model);
  if (refusal !== null) return exchange.sendError(refusal);

  body ??= parseJsonObject(raw);
  if (body === null) return exchange.sendError(INVALID_JSON);
  const parsed = parseRequest(route.operation, body, apiVersion);
  if (!parsed.ok) return exchange.sendError(parsed.error);
  const request = parsed.request;
  record.stream = request.stream;

  const limits = { operation: OPERATION_NAMES[request.operation], apiVersion };
  const { answered, fault } = exchange.takeTerminalFault(limits);
  if (answered) return;
  const estimate = estimateCost(request, context.defaultMaxTokens);
  if (!exchange.admit(estimate, limits)) return;
  respond(exchange, request, fault);
}

/** The 200 of chat, completions and embeddings, on the latency model's schedule. */
function respond(exchange: Exchange, request: SimRequest, fault: Fault | null): void {
  const deployment = exchange.deployment;
  const promptTokens = countPromptTokens(request, deployment.encoding);
  const { ttftMs, perTokenMs } = deployment.latency;
  const cutFault = cutFaultOf(fault);

  if (request.operation === 'embeddings') {
    exchange.setUsage(promptTokens, 0);
    const body = embeddingsBody(deployment.model, request, promptTokens);
    exchange.deliver(200, { pieces: [body], tickEnds: [1], firstTickMs: ttftMs, tickIntervalMs: 0, stream: false, cutFault }, fault);
    return;
  }

  const maxTokens = request.maxTokens ?? Infinity;
  const tokensPerChoice = Math.min(deployment.completionTokens, maxTokens);
  const generation: Generation = {
    id: nextCompletionId(request.operation === 'chat/completions' ? 'chatcmpl-' : 'cmpl-'),
    created: Math.floor(Date.now() / 1000),
    model: deployment.model,
    systemFingerprint: deployment.systemFingerprint,
    promptTokens,
    tokensPerChoice,
    finishReason: maxTokens < deployment.completionTokens ? 'length' : 'stop',
  };
  exchange.setUsage(promptTokens, completionTokensOf(generation, request));
  if (request.stream) {
    const script = buildStreamScript(request, generation);
    exchange.deliver(
      200,
      { pieces: script.events, tickEnds: script.tickEnds, firstTickMs: ttftMs, tickIntervalMs: perTokenMs, stream: true, cutFault },
      fault,
    );
    return;
  }
  const text = completionText(tokensPerChoice);
  const body =
    request.operation === 'chat/completions'
      ? chatCompletionBody(generation, request, text)
      : textCompletionBody(generation, request, text);
  exchange.deliver(
    200,
    { pieces: [body], tickEnds: [1], firstTickMs: ttftMs + perTokenMs * tokensPerChoice, tickIntervalMs: 0, stream: false, cutFault },
    fault,
  );
}
