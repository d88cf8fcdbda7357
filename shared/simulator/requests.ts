/**
 * Request bodies: validation (400s worded as OpenAI/Azure word them), the rate-limit estimate
 * Azure takes on arrival, and the exact prompt token count reported in `usage`.
 */
import { invalidRequest, type ErrorReply, type OperationName } from './errors.ts';
import { REPLY_PRIMING_TOKENS, instructionTokens, itemTokens } from './responses-api/items.ts';
import { parseCreateRequest } from './responses-api/request.ts';
import { optionalInteger, typeName } from './validation.ts';
import { countChatPromptTokens, countTextTokens, type EncodingName } from './tokens.ts';

import type { Operation } from '../operation.ts';

export type { Operation };

export const OPERATION_NAMES: Record<Operation, OperationName> = {
  'chat/completions': 'ChatCompletions_Create',
  completions: 'Completions_Create',
  embeddings: 'Embeddings_Create',
  responses: 'Responses_Create',
};

export interface SimRequest {
  operation: Operation;
  stream: boolean;
  /** stream_options.include_usage: a final usage chunk, and "usage":null on every other chunk. */
  includeUsage: boolean;
  /** Choices to generate: n (× the number of prompts for completions). */
  choices: number;
  /** max_tokens ?? max_completion_tokens (responses: max_output_tokens), or null when absent. */
  maxTokens: number | null;
  /** best_of (completions); Azure's estimate multiplies by it. */
  bestOf: number;
  /** Characters of prompt text: what Azure's estimate is "based in part on". */
  promptChars: number;
  /** Tokens given directly as token-id arrays (completions/embeddings), counted as is. */
  promptTokenIds: number;
  /** The prompt texts (chat: the messages; others: strings), for the exact usage count. */
  messages: readonly unknown[];
  texts: readonly string[];
  /** Embeddings: one vector per input; `dimensions` and `encoding_format`. */
  inputCount: number;
  dimensions: number | null;
  base64: boolean;
}

export type ParseResult = { ok: true; request: SimRequest } | { ok: false; error: ErrorReply };

const MAX_CHOICES = 128;
const MAX_EMBEDDING_DIMENSIONS = 3072;
/** The first api-version that knows `stream_options` (2024-09-01-preview); dated versions before it reject it. */
const STREAM_OPTIONS_SINCE = '2024-09-01';
const DATED_API_VERSION = /^(\d{4}-\d{2}-\d{2})(?:-preview)?$/;

/**
 * Whether Azure knows `stream_options` at this api-version: dated versions from 2024-09-01-preview on,
 * and the v1 routes (no api-version, `preview`, `latest`). Older versions answer
 * "Unrecognized request argument supplied: stream_options".
 */
export function streamOptionsSupported(apiVersion: string | null): boolean {
  const dated = apiVersion === null ? null : DATED_API_VERSION.exec(apiVersion);
  return dated === null || (dated[1] as string) >= STREAM_OPTIONS_SINCE;
}

/** `apiVersion`: the request's api-version, null when it named none (v1 routes). */
export function parseRequest(operation: Operation, body: Record<string, unknown>, apiVersion: string | null = null): ParseResult {
  const fail = (error: ErrorReply): ParseResult => ({ ok: false, error });
  if (operation === 'responses') return parseResponses(body);

  const stream = body.stream === true;
  const streamOptions = body.stream_options;
  // An api-version that predates the field does not know it at all, whatever its value.
  if (streamOptions !== undefined && !streamOptionsSupported(apiVersion)) {
    return fail(invalidRequest('Unrecognized request argument supplied: stream_options'));
  }
  if (streamOptions !== undefined && streamOptions !== null && !stream) {
    return fail(invalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.", 'stream_options'));
  }
  const includeUsage =
    stream &&
    typeof streamOptions === 'object' &&
    streamOptions !== null &&
    (streamOptions as { include_usage?: unknown }).include_usage === true;

  const n = optionalInteger(body, 'n', 1, MAX_CHOICES);
  if (typeof n === 'object') return fail(n);
  const bestOf = optionalInteger(body, 'best_of', 1, MAX_CHOICES);
  if (typeof bestOf === 'object') return fail(bestOf);
  const maxTokens = optionalInteger(body, 'max_tokens', 1, Number.MAX_SAFE_INTEGER);
  if (typeof maxTokens === 'object') return fail(maxTokens);
  const maxCompletionTokens = optionalInteger(body, 'max_completion_tokens', 1, Number.MAX_SAFE_INTEGER);
  if (typeof maxCompletionTokens === 'object') return fail(maxCompletionTokens);

  const request: SimRequest = {
    operation,
    stream: operation !== 'embeddings' && stream,
    includeUsage: operation !== 'embeddings' && includeUsage,
    choices: n ?? 1,
    maxTokens: maxTokens ?? maxCompletionTokens ?? null,
    bestOf: bestOf ?? 1,
    promptChars: 0,
    promptTokenIds: 0,
    messages: [],
    texts: [],
    inputCount: 0,
    dimensions: null,
    base64: false,
  };

  switch (operation) {
    case 'chat/completions':
      return parseChat(body, request);
    case 'completions':
      return parsePrompt(body, request, 'prompt');
    case 'embeddings':
      return parseEmbeddings(body, request);
  }
}

/**
 * responses.create as a SimRequest: what the estimate and a standalone prompt count need (the
 * simulator's own Responses routes use responses-api/ with the resource's state on top).
 */
function parseResponses(body: Record<string, unknown>): ParseResult {
  const parsed = parseCreateRequest(body);
  if (!parsed.ok) return parsed;
  const create = parsed.request;
  const items = typeof create.input === 'string' ? [{ role: 'user', content: create.input }] : create.input;
  return {
    ok: true,
    request: {
      operation: 'responses',
      stream: create.stream,
      includeUsage: false,
      choices: 1,
      maxTokens: create.maxOutputTokens,
      bestOf: 1,
      promptChars: create.promptChars,
      promptTokenIds: 0,
      messages: items,
      texts: create.instructions === null ? [] : [create.instructions],
      inputCount: items.length,
      dimensions: null,
      base64: false,
    },
  };
}

function parseChat(body: Record<string, unknown>, request: SimRequest): ParseResult {
  const messages = body.messages;
  if (messages === undefined || messages === null) {
    return { ok: false, error: invalidRequest("Missing required parameter: 'messages'.", 'messages', 'missing_required_parameter') };
  }
  if (!Array.isArray(messages)) {
    return {
      ok: false,
      error: invalidRequest(
        `Invalid type for 'messages': expected an array, but got ${typeName(messages)} instead.`,
        'messages',
        'invalid_type',
      ),
    };
  }
  if (messages.length === 0) {
    return { ok: false, error: invalidRequest("[] is too short - 'messages'", 'messages') };
  }
  let promptChars = 0;
  for (let index = 0; index < messages.length; index++) {
    const message: unknown = messages[index];
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      return {
        ok: false,
        error: invalidRequest(
          `Invalid type for 'messages[${index}]': expected an object, but got ${typeName(message)} instead.`,
          `messages[${index}]`,
          'invalid_type',
        ),
      };
    }
    promptChars += contentChars((message as { content?: unknown }).content);
  }
  request.messages = messages;
  request.promptChars = promptChars;
  return { ok: true, request };
}

/** Completions' `prompt` and embeddings' `input`: a string, strings, token ids, or arrays of token ids. */
function parsePrompt(body: Record<string, unknown>, request: SimRequest, field: 'prompt' | 'input'): ParseResult {
  const value = body[field];
  if (value === undefined || value === null) {
    return { ok: false, error: invalidRequest(`Missing required parameter: '${field}'.`, field, 'missing_required_parameter') };
  }
  const texts: string[] = [];
  let tokenIds = 0;
  let items = 0;
  const invalid = (): ParseResult => ({
    ok: false,
    error: invalidRequest(
      `Invalid type for '${field}': expected a string or an array of strings or token arrays, but got ${typeName(value)} instead.`,
      field,
      'invalid_type',
    ),
  });
  if (typeof value === 'string') {
    texts.push(value);
    items = 1;
  } else if (Array.isArray(value)) {
    if (value.length === 0) return { ok: false, error: invalidRequest(`[] is too short - '${field}'`, field) };
    if (value.every((item) => typeof item === 'number')) {
      tokenIds = value.length;
      items = 1;
    } else {
      for (const item of value) {
        if (typeof item === 'string') texts.push(item);
        else if (Array.isArray(item) && item.every((token) => typeof token === 'number')) tokenIds += item.length;
        else return invalid();
        items++;
      }
    }
  } else {
    return invalid();
  }
  let promptChars = 0;
  for (const text of texts) promptChars += text.length;
  request.texts = texts;
  request.promptChars = promptChars;
  request.promptTokenIds = tokenIds;
  request.inputCount = items;
  // Completions answer n choices per prompt.
  if (field === 'prompt') request.choices *= items;
  return { ok: true, request };
}

function parseEmbeddings(body: Record<string, unknown>, request: SimRequest): ParseResult {
  const parsed = parsePrompt(body, request, 'input');
  if (!parsed.ok) return parsed;
  const dimensions = optionalInteger(body, 'dimensions', 1, MAX_EMBEDDING_DIMENSIONS);
  if (typeof dimensions === 'object') return { ok: false, error: dimensions };
  const format = body.encoding_format;
  if (format !== undefined && format !== null && format !== 'float' && format !== 'base64') {
    return {
      ok: false,
      error: invalidRequest(
        `Invalid value for 'encoding_format': expected one of 'float' or 'base64', but got ${JSON.stringify(format)} instead.`,
        'encoding_format',
        'invalid_value',
      ),
    };
  }
  request.dimensions = dimensions ?? null;
  request.base64 = format === 'base64';
  return parsed;
}

/**
 * Azure's estimate, taken on arrival: ceil(prompt characters / 4) + max_tokens × max(n, best_of, 1)
 * (max_tokens defaulting to `defaultMaxTokens`); embeddings: ceil(characters / 4) of all inputs.
 * Token-id inputs count one per token.
 */
export function estimateCost(request: SimRequest, defaultMaxTokens: number): number {
  const promptEstimate = Math.ceil(request.promptChars / 4) + request.promptTokenIds;
  if (request.operation === 'embeddings') return promptEstimate;
  return promptEstimate + (request.maxTokens ?? defaultMaxTokens) * Math.max(request.choices, request.bestOf, 1);
}

/** The exact prompt_tokens of `usage`. */
export function countPromptTokens(request: SimRequest, encoding: EncodingName): number {
  if (request.operation === 'chat/completions') return countChatPromptTokens(request.messages, encoding);
  if (request.operation === 'responses') {
    // Without the resource's state: instructions and this input only, no earlier context.
    let total = REPLY_PRIMING_TOKENS + instructionTokens(request.texts[0] ?? null, encoding);
    for (const item of request.messages) total += itemTokens(item as Record<string, unknown>, encoding);
    return total;
  }
  let total = request.promptTokenIds;
  for (const text of request.texts) total += countTextTokens(text, encoding);
  return total;
}

/** Characters of a message's content: a string, or the text of its content parts. */
function contentChars(content: unknown): number {
  if (typeof content === 'string') return content.length;
  if (!Array.isArray(content)) return 0;
  let chars = 0;
  for (const part of content) {
    const text = typeof part === 'object' && part !== null ? (part as { text?: unknown }).text : undefined;
    if (typeof text === 'string') chars += text.length;
  }
  return chars;
}
