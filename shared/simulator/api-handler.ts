/**
 * The Azure OpenAI surface: routing, api-version, auth, validation, faults, rate limits, and the
 * timed response. The order of checks follows what Azure answers first: an unknown path or
 * api-version is a 404 before auth is looked at; a bad key is a 401 before the deployment is.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { deliver, type Cut, type DeliveryPlan } from './delivery.ts';
import type { DeploymentRuntime } from './deployments.ts';
import {
  DEPLOYMENT_NOT_FOUND,
  INVALID_JSON,
  RESOURCE_NOT_FOUND,
  UNAUTHORIZED,
  faultReply,
  invalidRequest,
  rateLimitReached,
  retryAfterSeconds,
  type ErrorReply,
} from './errors.ts';
import { pathOf, queryParam, readBody, sendJson } from './http-utils.ts';
import { OPERATIONS } from '../operation.ts';
import { OPERATION_NAMES, countPromptTokens, estimateCost, parseRequest, type Operation, type SimRequest } from './requests.ts';
import {
  chatCompletionBody,
  completionTokensOf,
  embeddingsBody,
  nextCompletionId,
  textCompletionBody,
  type Generation,
} from './responses.ts';
import type { Outcome } from './stats.ts';
import { buildStreamScript } from './streaming.ts';
import { completionText } from './tokens.ts';
import type { Fault, RecordedRequest } from './types.ts';

export interface ApiContext {
  deployments: ReadonlyMap<string, DeploymentRuntime>;
  apiKeys: ReadonlySet<string>;
  defaultMaxTokens: number;
}

interface Route {
  operation: Operation;
  /** From the path on classic routes; null on /openai/v1 (the body's `model` names it). */
  deployment: string | null;
}

const OPERATION_BY_SUFFIX = new Map<string, Operation>(OPERATIONS.map((operation) => [operation, operation]));
const CLASSIC_PREFIX = '/openai/deployments/';
const V1_PREFIX = '/openai/v1/';
const DATED_API_VERSION = /^\d{4}-\d{2}-\d{2}(-preview)?$/;
const V1_API_VERSIONS = new Set(['preview', 'latest', 'v1']);

export function matchRoute(path: string): Route | null {
  if (path.startsWith(V1_PREFIX)) {
    const operation = OPERATION_BY_SUFFIX.get(path.slice(V1_PREFIX.length));
    return operation ? { operation, deployment: null } : null;
  }
  if (!path.startsWith(CLASSIC_PREFIX)) return null;
  const rest = path.slice(CLASSIC_PREFIX.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return null;
  const operation = OPERATION_BY_SUFFIX.get(rest.slice(slash + 1));
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
  if (route.deployment === null) return apiVersion === null || V1_API_VERSIONS.has(apiVersion) || DATED_API_VERSION.test(apiVersion);
  return apiVersion !== null && DATED_API_VERSION.test(apiVersion);
}

/** 'api-key' or 'bearer' when a configured key came in either header; null otherwise. */
function authenticate(req: IncomingMessage, apiKeys: ReadonlySet<string>): 'api-key' | 'bearer' | null {
  const apiKey = req.headers['api-key'];
  if (typeof apiKey === 'string' && apiKeys.has(apiKey)) return 'api-key';
  const authorization = req.headers.authorization;
  if (authorization !== undefined && authorization.startsWith('Bearer ') && apiKeys.has(authorization.slice(7))) return 'bearer';
  return null;
}

/** Headers on every answer; Azure's apim-request-id and x-ms-client-request-id are equal in captures. */
function baseHeaders(requestId: string, deployment: DeploymentRuntime | null): string[] {
  const headers = ['apim-request-id', requestId, 'x-request-id', randomUUID(), 'x-ms-client-request-id', requestId];
  if (deployment !== null) {
    headers.push(
      'x-ms-region',
      deployment.region,
      'azureml-model-session',
      deployment.modelSession,
      'x-ms-deployment-name',
      deployment.name,
    );
  }
  return headers;
}

function sendError(res: ServerResponse, reply: ErrorReply, headers: string[]): void {
  if (reply.retryAfterMs !== undefined) {
    headers.push('retry-after', String(retryAfterSeconds(reply.retryAfterMs)), 'retry-after-ms', String(Math.ceil(reply.retryAfterMs)));
  }
  sendJson(res, reply.status, headers, reply.body);
}

export async function handleApiRequest(context: ApiContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = req.url ?? '/';
  const path = pathOf(url);
  const requestId = randomUUID();
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

  const clientRequestId = req.headers['x-request-id'];
  const record: RecordedRequest = {
    at: Date.now(),
    path,
    apiVersion,
    auth,
    clientRequestId: typeof clientRequestId === 'string' ? clientRequestId : null,
    requestId,
    stream: false,
    status: 0,
  };
  const exchange = new Exchange(deployment, res, record);

  body ??= parseJsonObject(raw);
  if (body === null) return exchange.sendError(INVALID_JSON);
  const parsed = parseRequest(route.operation, body, apiVersion);
  if (!parsed.ok) return exchange.sendError(parsed.error);
  const request = parsed.request;
  record.stream = request.stream;

  const fault = deployment.faults.take();
  if (fault !== null && exchange.applyTerminalFault(fault, request, apiVersion)) return;

  const now = performance.now();
  const estimate = estimateCost(request, context.defaultMaxTokens);
  const admission = deployment.limiter.admit(estimate, now);
  if (!admission.admitted) {
    return exchange.sendError(
      rateLimitReached({
        deployment: deployment.name,
        model: deployment.model,
        region: deployment.region,
        limit: admission.limit,
        operation: OPERATION_NAMES[request.operation],
        apiVersion: apiVersion ?? 'v1',
        retryAfterMs: admission.retryAfterMs,
      }),
    );
  }
  exchange.respond(request, estimate, fault);
}

function parseJsonObject(raw: Buffer): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(raw.toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/**
 * One request to a known deployment, from arrival to the connection's 'close': it counts the
 * request in, picks its outcome once, stops timers, and settles PTU usage.
 */
class Exchange {
  private readonly deployment: DeploymentRuntime;
  private readonly res: ServerResponse;
  private readonly record: RecordedRequest;
  private cancelDelivery: (() => void) | null = null;
  /** Set when the simulator itself dropped the connection (a fault), so 'close' is not an abort. */
  private resetOnPurpose = false;
  private estimate = 0;
  private admitted = false;
  private promptTokens = 0;
  private completionTokens = 0;

  constructor(deployment: DeploymentRuntime, res: ServerResponse, record: RecordedRequest) {
    this.deployment = deployment;
    this.res = res;
    this.record = record;
    deployment.stats.begin(record);
    res.once('close', () => this.onClose());
  }

  sendError(reply: ErrorReply, exhausted = false): void {
    const headers = baseHeaders(this.record.requestId, this.deployment);
    this.deployment.limiter.appendHeaders(headers, performance.now(), exhausted);
    sendError(this.res, reply, headers);
  }

  /** Faults that replace the response entirely; true when one did. */
  applyTerminalFault(fault: Fault, request: SimRequest, apiVersion: string | null): boolean {
    switch (fault.kind) {
      case 'storm-429':
      case 'status':
        if (fault.kind === 'storm-429' || fault.status === 429) {
          const reply = rateLimitReached({
            deployment: this.deployment.name,
            model: this.deployment.model,
            region: this.deployment.region,
            limit: 'token',
            operation: OPERATION_NAMES[request.operation],
            apiVersion: apiVersion ?? 'v1',
            retryAfterMs: fault.retryAfterMs ?? 1000,
          });
          this.sendError(reply, true);
        } else {
          this.sendError(faultReply(fault.status, this.record.requestId, fault.retryAfterMs));
        }
        return true;
      case 'reset':
        this.resetOnPurpose = true;
        // An RST, not a polite FIN: the client sees ECONNRESET as from a dropped backend.
        this.res.socket?.resetAndDestroy();
        return true;
      case 'hang':
        return true; // Never answer; 'close' will count the abort when the client gives up.
      default:
        return false;
    }
  }

  /** The 200, on the latency model's schedule, shaped by slow-first-byte or mid-stream faults. */
  respond(request: SimRequest, estimate: number, fault: Fault | null): void {
    const deployment = this.deployment;
    this.admitted = true;
    this.estimate = estimate;
    const now = performance.now();
    const headers = baseHeaders(this.record.requestId, deployment);
    deployment.limiter.appendHeaders(headers, now);
    const promptTokens = countPromptTokens(request, deployment.encoding);
    const { ttftMs, perTokenMs } = deployment.latency;
    const extraDelayMs = fault?.kind === 'slow-first-byte' ? fault.delayMs : 0;
    const cutAfter = fault?.kind === 'stall-mid-stream' || fault?.kind === 'reset-mid-stream' ? fault : null;

    let pieces: string[];
    let tickEnds: number[];
    let firstTickMs: number;
    let tickIntervalMs = 0;
    let cut: Cut | null = null;

    if (request.operation === 'embeddings') {
      this.promptTokens = promptTokens;
      pieces = [embeddingsBody(deployment.model, request, promptTokens)];
      tickEnds = [1];
      firstTickMs = ttftMs + extraDelayMs;
    } else {
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
      this.promptTokens = promptTokens;
      this.completionTokens = completionTokensOf(generation, request);
      if (request.stream) {
        const script = buildStreamScript(request, generation);
        pieces = script.events;
        tickEnds = script.tickEnds;
        firstTickMs = ttftMs + extraDelayMs;
        tickIntervalMs = perTokenMs;
        if (cutAfter !== null) cut = toCut(cutAfter, cutAfter.afterChunks);
      } else {
        const text = completionText(tokensPerChoice);
        pieces = [
          request.operation === 'chat/completions'
            ? chatCompletionBody(generation, request, text)
            : textCompletionBody(generation, request, text),
        ];
        tickEnds = [1];
        firstTickMs = ttftMs + perTokenMs * tokensPerChoice + extraDelayMs;
      }
    }

    if (request.stream) {
      headers.push('content-type', 'text/event-stream; charset=utf-8', 'cache-control', 'no-cache');
    } else {
      const body = pieces[0] as string;
      headers.push('content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)));
      if (cutAfter !== null) {
        // A JSON body has no chunks: the cut falls in its middle, after the headers promised all of it.
        const half = Math.floor(body.length / 2);
        pieces = [body.slice(0, half), body.slice(half)];
        tickEnds = [2];
        cut = toCut(cutAfter, 1);
      }
    }

    const plan: DeliveryPlan = { status: 200, headers, pieces, tickEnds, firstTickMs, tickIntervalMs, cut };
    this.cancelDelivery = deliver(this.res, plan, () => {
      this.resetOnPurpose = true;
    });
  }

  private onClose(): void {
    this.cancelDelivery?.();
    this.cancelDelivery = null;
    const res = this.res;
    let outcome: Outcome;
    if (res.writableFinished) {
      const status = res.statusCode;
      outcome = status >= 200 && status < 300 ? 'served' : status === 429 ? 'throttled' : 'failed';
    } else {
      outcome = this.resetOnPurpose ? 'failed' : 'aborted';
    }
    this.record.status = res.headersSent ? res.statusCode : 0;
    const served = outcome === 'served';
    if (this.admitted) {
      // PTU: replace the arrival estimate by what the request really cost (the prompt alone if cut short).
      const actual = this.promptTokens + (served ? this.completionTokens : 0);
      this.deployment.limiter.settle(this.estimate, actual, performance.now());
    }
    this.deployment.stats.end(outcome, served ? this.promptTokens : 0, served ? this.completionTokens : 0);
  }
}

function toCut(fault: Extract<Fault, { kind: 'stall-mid-stream' | 'reset-mid-stream' }>, afterPieces: number): Cut {
  if (fault.kind === 'reset-mid-stream') return { afterPieces, action: 'reset' };
  return fault.stallMs === undefined ? { afterPieces, action: 'stall' } : { afterPieces, action: 'stall', stallMs: fault.stallMs };
}
