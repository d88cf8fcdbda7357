/**
 * The Responses and Conversations APIs of one resource. The order of checks follows the chat
 * routes (api-version and path before auth, auth before the deployment), then OpenAI's: the body's
 * schema, then the resource's state (conversation, previous_response_id, item ids, encrypted
 * reasoning), then faults and the rate limiter. Calls by id have no `model`: they count against the
 * deployment that created the response (conversations: the simulator's first deployment), or the
 * first deployment when this resource does not know the id.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { authenticate, datedApiVersion, newRecord, parseJsonObject, v1ApiVersionAccepted } from '../access.ts';
import type { ApiContext } from '../context.ts';
import type { DeploymentRuntime } from '../deployments.ts';
import {
  DEPLOYMENT_NOT_FOUND,
  INVALID_JSON,
  RESOURCE_NOT_FOUND,
  UNAUTHORIZED,
  invalidRequest,
  type ErrorReply,
  type OperationName,
} from '../errors.ts';
import { Exchange, baseHeaders, cutFaultOf, sendError, type LimitContext } from '../exchange.ts';
import { queryParam, readBody } from '../http-utils.ts';
import { operationRefusal } from '../model-operations.ts';
import type { Fault } from '../types.ts';
import { optionalInteger, typeName } from '../validation.ts';
import {
  buildResponseStream,
  conversationObject,
  deletedConversation,
  deletedResponse,
  finalStatusOf,
  itemList,
  responseObject,
  type ListQuery,
} from './bodies.ts';
import {
  BACKGROUND_REQUIRES_STORE,
  CANNOT_CANCEL_SYNCHRONOUS,
  INPUT_REQUIRED,
  conversationItemNotFound,
  conversationNotFound,
  inputItemNotFound,
  invalidEncryptedContent,
  invalidUrl,
  previousResponseNotFound,
  responseNotFound,
} from './errors.ts';
import { generate, outputTokensOf } from './generation.ts';
import { itemIdPrefix, newId, newLineage } from './ids.ts';
import { instructionTokens, itemTokens, storedShape, type StoredItem } from './items.ts';
import { checkInputItem, inputIsEmpty, parseCreateRequest } from './request.ts';
import type { StatefulKind, StatefulRoute } from './routes.ts';
import { stopTimers, type ConversationRecord, type ResourceState, type ResponseRecord } from './state.ts';

export { matchStatefulRoute } from './routes.ts';

/** The first dated api-version with the Responses API. */
const RESPONSES_SINCE = '2025-03-01';
const MAX_ITEMS_PER_CALL = 20;
const MAX_LIST_LIMIT = 100;
const DEFAULT_LIST_LIMIT = 20;

const OPERATION_NAMES: Record<StatefulKind, OperationName> = {
  'responses.create': 'Responses_Create',
  'responses.get': 'Responses_Get',
  'responses.delete': 'Responses_Delete',
  'responses.cancel': 'Responses_Cancel',
  'responses.input_items': 'Responses_ListInputItems',
  'conversations.create': 'Conversations_Create',
  'conversations.get': 'Conversations_Get',
  'conversations.update': 'Conversations_Update',
  'conversations.delete': 'Conversations_Delete',
  'conversations.items.list': 'ConversationItems_List',
  'conversations.items.create': 'ConversationItems_Create',
  'conversations.items.get': 'ConversationItems_Get',
  'conversations.items.delete': 'ConversationItems_Delete',
};

interface Call {
  context: ApiContext;
  route: StatefulRoute;
  req: IncomingMessage;
  res: ServerResponse;
  url: string;
  path: string;
  apiVersion: string | null;
  auth: 'api-key' | 'bearer';
  requestId: string;
  raw: Buffer;
}

export async function handleStatefulRequest(
  context: ApiContext,
  route: StatefulRoute,
  req: IncomingMessage,
  res: ServerResponse,
  url: string,
  path: string,
  requestId: string,
): Promise<void> {
  const apiVersion = queryParam(url, 'api-version');
  const dated = route.v1 ? null : datedApiVersion(apiVersion);
  const versionOk = route.v1 ? v1ApiVersionAccepted(apiVersion) : dated !== null;
  if (!versionOk) return sendError(res, RESOURCE_NOT_FOUND, baseHeaders(requestId, null));
  const auth = authenticate(req, context.apiKeys);
  if (auth === null) return sendError(res, UNAUTHORIZED, baseHeaders(requestId, null));
  let raw: Buffer;
  try {
    raw = await readBody(req);
  } catch {
    return; // The client left while sending.
  }
  if (dated !== null && dated < RESPONSES_SINCE) {
    return sendError(res, invalidUrl(req.method ?? 'POST', `/v1/${route.rest}`), baseHeaders(requestId, null));
  }
  const call: Call = { context, route, req, res, url, path, apiVersion, auth, requestId, raw };
  switch (route.kind) {
    case 'responses.create':
      return createResponse(call);
    case 'conversations.create':
      return createConversation(call);
    case 'responses.get':
    case 'responses.delete':
    case 'responses.cancel':
    case 'responses.input_items':
      return responseById(call);
    default:
      return conversationById(call);
  }
}

function limitContext(call: Call): LimitContext {
  return { operation: OPERATION_NAMES[call.route.kind], apiVersion: call.apiVersion };
}

function openExchange(call: Call, deployment: DeploymentRuntime, model: string | null, references: string[]): Exchange {
  const record = newRecord({
    req: call.req,
    path: call.path,
    apiVersion: call.apiVersion,
    auth: call.auth,
    requestId: call.requestId,
    model,
    references,
  });
  return new Exchange(deployment, call.res, record);
}

/** Faults, then the rate limiter (a call by id costs one request and no tokens); false when either answered. */
function passFaultsAndLimits(exchange: Exchange, call: Call, estimate: number): { passed: boolean; fault: Fault | null } {
  const limits = limitContext(call);
  const { answered, fault } = exchange.takeTerminalFault(limits);
  if (answered) return { passed: false, fault };
  return { passed: exchange.admit(estimate, limits), fault };
}

// ---- responses.create --------------------------------------------------------------------------

function createResponse(call: Call): void {
  const { context, res, requestId } = call;
  const body = parseJsonObject(call.raw);
  if (body === null) return sendError(res, INVALID_JSON, baseHeaders(requestId, null));
  if (typeof body.model !== 'string' || body.model === '') {
    return sendError(
      res,
      invalidRequest("Missing required parameter: 'model'.", 'model', 'missing_required_parameter'),
      baseHeaders(requestId, null),
    );
  }
  const deployment = context.deployments.get(body.model);
  if (deployment === undefined) return sendError(res, DEPLOYMENT_NOT_FOUND, baseHeaders(requestId, null));
  const exchange = openExchange(call, deployment, body.model, []);
  const refusal = operationRefusal('responses', deployment.model);
  if (refusal !== null) return exchange.sendError(refusal);

  const parsed = parseCreateRequest(body);
  if (!parsed.ok) return exchange.sendError(parsed.error);
  const request = parsed.request;
  exchange.record.references = request.references;
  exchange.record.stream = request.stream;
  if (request.background && !request.store) return exchange.sendError(BACKGROUND_REQUIRES_STORE);

  // The resource's state: what the request continues from, and every id it names.
  const state = context.state;
  let inherited = 0;
  let lineage: string;
  let conversation: ConversationRecord | null = null;
  if (request.conversationId !== null) {
    conversation = state.conversation(request.conversationId) ?? null;
    if (conversation === null) return exchange.sendError(conversationNotFound(request.conversationId));
    inherited = state.conversationTokens(conversation);
    lineage = conversation.lineage;
  } else if (request.previousResponseId !== null) {
    const previous = state.response(request.previousResponseId);
    if (previous === undefined) return exchange.sendError(previousResponseNotFound(request.previousResponseId));
    inherited = previous.contextTokens;
    lineage = previous.lineage;
  } else {
    if (inputIsEmpty(request)) return exchange.sendError(INPUT_REQUIRED);
    lineage = newLineage();
  }
  const rawItems = typeof request.input === 'string' ? [{ role: 'user', content: request.input }] : request.input;
  const resolved = resolveItems(state, rawItems, lineage, deployment, !request.store);
  if (!resolved.ok) return exchange.sendError(resolved.error);

  const { passed, fault } = passFaultsAndLimits(
    exchange,
    call,
    Math.ceil(request.promptChars / 4) + (request.maxOutputTokens ?? context.defaultMaxTokens),
  );
  if (!passed) return;

  const result = generate({
    deployment,
    request,
    contextTokens: inherited + instructionTokens(request.instructions, deployment.encoding) + resolved.tokens,
    lineage,
    sealer: state.sealer,
  });
  const { ttftMs, perTokenMs } = deployment.latency;
  const durationMs = ttftMs + outputTokensOf(result) * perTokenMs;
  let outputContext = 0;
  for (const item of result.output) outputContext += item.tokens;
  const record: ResponseRecord = {
    id: newId('resp_', lineage),
    lineage,
    deployment: deployment.name,
    model: deployment.model,
    createdAt: Math.floor(Date.now() / 1000),
    completedAt: Math.floor((Date.now() + durationMs) / 1000),
    status: request.background ? 'queued' : finalStatusOf({ result }),
    request,
    reasoning: request.reasoning === null ? null : { effort: request.reasoning.effort ?? 'medium', summary: request.reasoning.summary },
    inputItems: resolved.items,
    result,
    contextTokens: inherited + resolved.tokens + outputContext,
    estimate: 0,
    timers: [],
  };
  // The input lives on in record.inputItems; the request keeps only what the response echoes.
  request.input = [];
  const commit = (): void => {
    if (request.store) state.putResponse(record);
    if (conversation !== null) state.appendToConversation(conversation, [...record.inputItems, ...record.result.output]);
  };

  if (request.background) {
    record.estimate = exchange.deferSettlement();
    state.putResponse(record);
    runInBackground(record, deployment, durationMs, () => {
      if (conversation !== null) state.appendToConversation(conversation, [...record.inputItems, ...record.result.output]);
    });
  } else {
    exchange.setUsage(result.inputTokens, outputTokensOf(result));
    exchange.onEnd((outcome) => {
      // A response whose answer never fully left (abort, reset, stall) is not kept.
      if (outcome === 'served') commit();
    });
  }

  const cutFault = cutFaultOf(fault);
  if (request.stream) {
    const script = buildResponseStream(record, request.includeObfuscation);
    exchange.deliver(
      200,
      {
        pieces: script.events,
        tickEnds: script.tickEnds,
        firstTickMs: ttftMs + result.reasoningTokens * perTokenMs,
        tickIntervalMs: perTokenMs,
        stream: true,
        cutFault,
      },
      fault,
    );
  } else if (request.background) {
    exchange.deliverJson(200, JSON.stringify(responseObject(record, 'queued')), fault);
  } else {
    const json = JSON.stringify(responseObject(record));
    exchange.deliver(200, { pieces: [json], tickEnds: [1], firstTickMs: durationMs, tickIntervalMs: 0, stream: false, cutFault }, fault);
  }
}

/** A background response: queued now, in_progress at the first token, done after the last. */
function runInBackground(record: ResponseRecord, deployment: DeploymentRuntime, durationMs: number, onDone: () => void): void {
  const schedule = (delayMs: number, action: () => void): void => {
    const timer = setTimeout(action, Math.max(0, delayMs));
    timer.unref();
    record.timers.push(timer);
  };
  schedule(deployment.latency.ttftMs, () => {
    if (record.status === 'queued') record.status = 'in_progress';
  });
  schedule(durationMs, () => {
    if (record.status !== 'queued' && record.status !== 'in_progress') return;
    record.status = finalStatusOf(record);
    record.completedAt = Math.floor(Date.now() / 1000);
    record.timers.length = 0;
    const outputTokens = outputTokensOf(record.result);
    deployment.stats.addTokens(record.result.inputTokens, outputTokens);
    deployment.limiter.settle(record.estimate, record.result.inputTokens + outputTokens, performance.now());
    onDone();
  });
}

/** Stops a background generation that has not finished: it is billed its input only. */
function stopGeneration(record: ResponseRecord, context: ApiContext): void {
  if (record.status !== 'queued' && record.status !== 'in_progress') return;
  stopTimers(record);
  const deployment = context.deployments.get(record.deployment);
  deployment?.limiter.settle(record.estimate, record.result.inputTokens, performance.now());
}

type Resolution = { ok: true; items: StoredItem[]; tokens: number } | { ok: false; error: ErrorReply };

/**
 * Input items as this resource stores them: new items get ids; items named by id (item_reference,
 * or an earlier output echoed with its id) must be held here; encrypted reasoning must be this
 * resource's own.
 */
function resolveItems(
  state: ResourceState,
  raws: readonly Record<string, unknown>[],
  lineage: string,
  deployment: DeploymentRuntime,
  storeFalse: boolean,
): Resolution {
  const items: StoredItem[] = [];
  let tokens = 0;
  for (const raw of raws) {
    let item: StoredItem | undefined;
    if (typeof raw.id === 'string') {
      item = state.item(raw.id);
      if (item === undefined) return { ok: false, error: inputItemNotFound(raw.id, storeFalse) };
    } else if (raw.type === 'reasoning' && typeof raw.encrypted_content === 'string') {
      const payload = state.sealer.open(raw.encrypted_content);
      if (payload === null) return { ok: false, error: invalidEncryptedContent(raw.encrypted_content) };
      item = state.item(payload.id) ?? {
        id: payload.id,
        item: { id: payload.id, type: 'reasoning', encrypted_content: raw.encrypted_content, summary: raw.summary ?? [] },
        tokens: 0,
        holders: 0,
      };
    } else {
      const type = typeof raw.type === 'string' ? raw.type : 'message';
      const id = newId(itemIdPrefix(type), lineage);
      item = { id, item: storedShape(id, raw), tokens: itemTokens(raw, deployment.encoding), holders: 0 };
    }
    items.push(item);
    tokens += item.tokens;
  }
  return { ok: true, items, tokens };
}

// ---- calls by response id ----------------------------------------------------------------------

function responseById(call: Call): void {
  const { context } = call;
  const id = call.route.id as string;
  const record = context.state.response(id);
  const deployment = (record && context.deployments.get(record.deployment)) ?? context.firstDeployment;
  const exchange = openExchange(call, deployment, null, [id]);
  if (record === undefined) return exchange.sendError(responseNotFound(id));

  let listQuery: ListQuery | null = null;
  if (call.route.kind === 'responses.input_items') {
    const query = parseListQuery(call.url);
    if ('status' in query) return exchange.sendError(query);
    listQuery = query;
  }
  if (call.route.kind === 'responses.cancel' && !record.request.background) return exchange.sendError(CANNOT_CANCEL_SYNCHRONOUS);

  const { passed, fault } = passFaultsAndLimits(exchange, call, 0);
  if (!passed) return;
  switch (call.route.kind) {
    case 'responses.get':
      return exchange.deliverJson(200, JSON.stringify(responseObject(record)), fault);
    case 'responses.delete':
      stopGeneration(record, context);
      context.state.deleteResponse(id);
      return exchange.deliverJson(200, deletedResponse(id), fault);
    case 'responses.cancel':
      // Best effort, as on Azure: a response that already finished stays as it is.
      if (record.status === 'queued' || record.status === 'in_progress') {
        stopGeneration(record, context);
        record.status = 'cancelled';
      }
      return exchange.deliverJson(200, JSON.stringify(responseObject(record)), fault);
    default:
      return exchange.deliverJson(200, itemList(record.inputItems, listQuery as ListQuery), fault);
  }
}

// ---- conversations -----------------------------------------------------------------------------

function createConversation(call: Call): void {
  const { context } = call;
  const exchange = openExchange(call, context.firstDeployment, null, []);
  const body = call.raw.length === 0 ? {} : parseJsonObject(call.raw);
  if (body === null) return exchange.sendError(INVALID_JSON);
  const metadata = parseMetadata(body.metadata);
  const lineage = newLineage();
  const items = body.items === undefined || body.items === null ? [] : body.items;
  const checked = checkItems(items, 'items');
  if (!checked.ok) return exchange.sendError(checked.error);
  exchange.record.references = checked.references;
  if (!metadata.ok) return exchange.sendError(metadata.error);
  const resolved = resolveItems(context.state, checked.items, lineage, context.firstDeployment, false);
  if (!resolved.ok) return exchange.sendError(resolved.error);

  const { passed, fault } = passFaultsAndLimits(exchange, call, 0);
  if (!passed) return;
  const conversation: ConversationRecord = {
    id: newId('conv_', lineage),
    lineage,
    createdAt: Math.floor(Date.now() / 1000),
    metadata: metadata.metadata,
    items: resolved.items,
    deployment: context.firstDeployment.name,
  };
  context.state.putConversation(conversation);
  exchange.deliverJson(200, JSON.stringify(conversationObject(conversation)), fault);
}

function conversationById(call: Call): void {
  const { context, route } = call;
  const id = route.id as string;
  const conversation = context.state.conversation(id);
  const deployment = (conversation && context.deployments.get(conversation.deployment)) ?? context.firstDeployment;
  const exchange = openExchange(call, deployment, null, route.itemId === null ? [id] : [id, route.itemId]);
  if (conversation === undefined) return exchange.sendError(conversationNotFound(id));

  // Bodies and queries first (400s), then faults and limits, then the answer.
  let answer: () => string;
  switch (route.kind) {
    case 'conversations.get':
      answer = () => JSON.stringify(conversationObject(conversation));
      break;
    case 'conversations.update': {
      const body = parseJsonObject(call.raw);
      if (body === null) return exchange.sendError(INVALID_JSON);
      if (body.metadata === undefined) {
        return exchange.sendError(invalidRequest("Missing required parameter: 'metadata'.", 'metadata', 'missing_required_parameter'));
      }
      const metadata = parseMetadata(body.metadata);
      if (!metadata.ok) return exchange.sendError(metadata.error);
      answer = () => {
        conversation.metadata = metadata.metadata;
        return JSON.stringify(conversationObject(conversation));
      };
      break;
    }
    case 'conversations.delete':
      answer = () => {
        context.state.deleteConversation(id);
        return deletedConversation(id);
      };
      break;
    case 'conversations.items.list': {
      const query = parseListQuery(call.url);
      if ('status' in query) return exchange.sendError(query);
      answer = () => itemList(conversation.items, query);
      break;
    }
    case 'conversations.items.create': {
      const body = parseJsonObject(call.raw);
      if (body === null) return exchange.sendError(INVALID_JSON);
      if (body.items === undefined) {
        return exchange.sendError(invalidRequest("Missing required parameter: 'items'.", 'items', 'missing_required_parameter'));
      }
      const checked = checkItems(body.items, 'items');
      if (!checked.ok) return exchange.sendError(checked.error);
      exchange.record.references.push(...checked.references);
      const resolved = resolveItems(context.state, checked.items, conversation.lineage, deployment, false);
      if (!resolved.ok) return exchange.sendError(resolved.error);
      answer = () => {
        context.state.appendToConversation(conversation, resolved.items);
        return itemList(resolved.items, { order: 'asc', limit: resolved.items.length, after: null });
      };
      break;
    }
    case 'conversations.items.get': {
      const item = conversation.items.find((candidate) => candidate.id === route.itemId);
      if (item === undefined) return exchange.sendError(conversationItemNotFound(route.itemId as string));
      answer = () => JSON.stringify(item.item);
      break;
    }
    default: {
      const itemId = route.itemId as string;
      if (!conversation.items.some((candidate) => candidate.id === itemId)) return exchange.sendError(conversationItemNotFound(itemId));
      answer = () => {
        context.state.removeFromConversation(conversation, itemId);
        return JSON.stringify(conversationObject(conversation));
      };
    }
  }
  const { passed, fault } = passFaultsAndLimits(exchange, call, 0);
  if (!passed) return;
  exchange.deliverJson(200, answer(), fault);
}

type CheckedItems = { ok: true; items: Record<string, unknown>[]; references: string[] } | { ok: false; error: ErrorReply };

function checkItems(value: unknown, field: string): CheckedItems {
  if (!Array.isArray(value)) {
    return {
      ok: false,
      error: invalidRequest(
        `Invalid type for '${field}': expected an array of input items, but got ${typeName(value)} instead.`,
        field,
        'invalid_type',
      ),
    };
  }
  if (value.length > MAX_ITEMS_PER_CALL) {
    return {
      ok: false,
      error: invalidRequest(
        `Invalid '${field}': array too long. Expected an array with maximum length ${MAX_ITEMS_PER_CALL}, but got an array with length ${value.length} instead.`,
        field,
        'array_above_max_length',
      ),
    };
  }
  const references: string[] = [];
  for (let index = 0; index < value.length; index++) {
    const problem = checkInputItem(value[index], `${field}[${index}]`);
    if (problem !== null) return { ok: false, error: problem };
    const id = (value[index] as { id?: unknown }).id;
    if (typeof id === 'string') references.push(id);
  }
  return { ok: true, items: value as Record<string, unknown>[], references };
}

type MetadataParse = { ok: true; metadata: Record<string, unknown> } | { ok: false; error: ErrorReply };

function parseMetadata(value: unknown): MetadataParse {
  if (value === undefined || value === null) return { ok: true, metadata: {} };
  if (typeof value !== 'object' || Array.isArray(value)) {
    return {
      ok: false,
      error: invalidRequest(
        `Invalid type for 'metadata': expected a metadata object, but got ${typeName(value)} instead.`,
        'metadata',
        'invalid_type',
      ),
    };
  }
  return { ok: true, metadata: value as Record<string, unknown> };
}

/** `order` (asc|desc, default desc), `limit` (1-100, default 20), `after` (an item id). */
function parseListQuery(url: string): ListQuery | ErrorReply {
  const order = queryParam(url, 'order') ?? 'desc';
  if (order !== 'asc' && order !== 'desc') {
    return invalidRequest(`Invalid value: '${order}'. Supported values are: 'asc' and 'desc'.`, 'order', 'invalid_value');
  }
  const limitText = queryParam(url, 'limit');
  let limit = DEFAULT_LIST_LIMIT;
  if (limitText !== null) {
    const parsed = optionalInteger({ limit: /^-?\d+$/.test(limitText) ? Number(limitText) : limitText }, 'limit', 1, MAX_LIST_LIMIT);
    if (typeof parsed === 'object') return parsed;
    limit = parsed ?? DEFAULT_LIST_LIMIT;
  }
  return { order, limit, after: queryParam(url, 'after') };
}
