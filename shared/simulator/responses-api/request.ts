/**
 * responses.create bodies: the schema checks, worded and ordered as OpenAI's API answers them (the
 * state checks — previous_response_id, conversation, item ids, encrypted content — come after, in
 * handler.ts, because they need the resource's store), and the settings the response echoes.
 */
import { invalidRequest, type ErrorReply } from '../errors.ts';
import { optionalInteger, typeName } from '../validation.ts';
import { CONVERSATION_WITH_PREVIOUS_RESPONSE, MESSAGES_MOVED_TO_INPUT } from './errors.ts';
import { ID_PREFIX_BY_TYPE, INPUT_ITEM_TYPES, MESSAGE_ROLES, itemChars } from './items.ts';

/** The floor OpenAI's API puts on max_output_tokens. */
export const MIN_OUTPUT_TOKENS = 16;
const MAX_METADATA_PROPERTIES = 16;

const INCLUDABLE = [
  'file_search_call.results',
  'web_search_call.results',
  'web_search_call.action.sources',
  'message.input_image.image_url',
  'computer_call_output.output.image_url',
  'code_interpreter_call.outputs',
  'reasoning.encrypted_content',
  'message.output_text.logprobs',
];
const REASONING_EFFORTS = ['none', 'minimal', 'low', 'medium', 'high', 'xhigh', 'max'];
const REASONING_SUMMARIES = ['concise', 'detailed', 'auto'];
const TRUNCATIONS = ['auto', 'disabled'];

export interface ReasoningSetting {
  effort: string | null;
  summary: string | null;
}

export interface ResponsesCreateRequest {
  /** The deployment name. */
  model: string;
  /** A string, or validated items (objects) in order. */
  input: string | Record<string, unknown>[];
  instructions: string | null;
  maxOutputTokens: number | null;
  previousResponseId: string | null;
  conversationId: string | null;
  store: boolean;
  background: boolean;
  stream: boolean;
  includeEncryptedReasoning: boolean;
  /** stream_options.include_obfuscation (default true): the `obfuscation` padding on delta events. */
  includeObfuscation: boolean;
  /** Present when the request asked for reasoning (effort 'none' asks for none). */
  reasoning: ReasoningSetting | null;
  /** Characters of instructions and input text: the base of the rate-limit estimate. */
  promptChars: number;
  /** The ids the request names: previous_response_id, conversation, input items' ids. */
  references: string[];
  /** Settings echoed in the response object as sent (or their defaults). */
  echo: EchoedSettings;
}

export interface EchoedSettings {
  maxToolCalls: number | null;
  metadata: Record<string, unknown>;
  parallelToolCalls: boolean;
  promptCacheKey: string | null;
  safetyIdentifier: string | null;
  serviceTier: string;
  temperature: number;
  text: unknown;
  toolChoice: unknown;
  tools: unknown[];
  topLogprobs: number;
  topP: number;
  truncation: string;
  user: string | null;
}

export type CreateParse = { ok: true; request: ResponsesCreateRequest } | { ok: false; error: ErrorReply };

export function parseCreateRequest(body: Record<string, unknown>): CreateParse {
  const fail = (error: ErrorReply): CreateParse => ({ ok: false, error });
  const model = body.model as string; // checked by the caller (it names the deployment)

  if (body.messages !== undefined) return fail(MESSAGES_MOVED_TO_INPUT);
  const input = body.input;
  if (input === undefined) return fail(invalidRequest("Missing required parameter: 'input'.", 'input', 'missing_required_parameter'));
  if (input === null) return fail(invalidType('input', 'a string', 'an object'));
  if (typeof input !== 'string' && !Array.isArray(input)) {
    return fail(invalidType('input', 'one of a string or array of input items', typeName(input)));
  }
  const references: string[] = [];
  let promptChars = typeof input === 'string' ? input.length : 0;
  if (Array.isArray(input)) {
    for (let index = 0; index < input.length; index++) {
      const problem = checkInputItem(input[index], `input[${index}]`);
      if (problem !== null) return fail(problem);
      const item = input[index] as Record<string, unknown>;
      if (typeof item.id === 'string') references.push(item.id);
      promptChars += itemChars(item);
    }
  }

  const previous = body.previous_response_id;
  if (previous !== undefined && previous !== null && typeof previous !== 'string') {
    return fail(invalidType('previous_response_id', 'a string', typeName(previous)));
  }
  const include = body.include;
  if (include !== undefined && include !== null) {
    if (!Array.isArray(include)) return fail(invalidType('include', 'an array of supported values', typeName(include)));
    for (let index = 0; index < include.length; index++) {
      const value: unknown = include[index];
      if (typeof value !== 'string' || !INCLUDABLE.includes(value)) {
        return fail(invalidValue(`include[${index}]`, String(value), INCLUDABLE));
      }
    }
  }
  const tools = body.tools;
  if (tools !== undefined && tools !== null && !Array.isArray(tools)) {
    return fail(invalidType('tools', 'an array of tools', typeName(tools)));
  }
  const metadata = body.metadata;
  if (metadata !== undefined && metadata !== null) {
    if (typeof metadata !== 'object' || Array.isArray(metadata))
      return fail(invalidType('metadata', 'a metadata object', typeName(metadata)));
    const count = Object.keys(metadata).length;
    if (count > MAX_METADATA_PROPERTIES) {
      return fail(
        invalidRequest(
          `Invalid 'metadata': too many properties. Expected an object with at most ${MAX_METADATA_PROPERTIES} properties, but got an object with ${count} properties instead.`,
          'metadata',
          'object_above_max_properties',
        ),
      );
    }
  }
  const text = body.text;
  if (text !== undefined && text !== null && (typeof text !== 'object' || Array.isArray(text))) {
    return fail(invalidType('text', 'an object', typeName(text)));
  }
  for (const field of ['temperature', 'top_p']) {
    const value = body[field];
    if (value !== undefined && value !== null && typeof value !== 'number') return fail(invalidType(field, 'a decimal', typeName(value)));
  }
  for (const field of ['parallel_tool_calls', 'stream']) {
    const problem = booleanProblem(body, field);
    if (problem !== null) return fail(problem);
  }
  const streamOptions = body.stream_options;
  if (streamOptions !== undefined && streamOptions !== null) {
    if (typeof streamOptions !== 'object' || Array.isArray(streamOptions)) {
      return fail(invalidType('stream_options', 'an object', typeName(streamOptions)));
    }
    for (const key of Object.keys(streamOptions)) {
      if (key !== 'include_obfuscation') {
        return fail(invalidRequest(`Unknown parameter: 'stream_options.${key}'.`, `stream_options.${key}`, 'unknown_parameter'));
      }
    }
  }
  const backgroundProblem = booleanProblem(body, 'background');
  if (backgroundProblem !== null) return fail(backgroundProblem);
  const maxOutputTokens = optionalInteger(body, 'max_output_tokens', MIN_OUTPUT_TOKENS, Number.MAX_SAFE_INTEGER);
  if (typeof maxOutputTokens === 'object') return fail(maxOutputTokens);
  const maxToolCalls = optionalInteger(body, 'max_tool_calls', 1, Number.MAX_SAFE_INTEGER);
  if (typeof maxToolCalls === 'object') return fail(maxToolCalls);
  const reasoning = parseReasoning(body.reasoning);
  if (reasoning !== null && 'status' in reasoning) return fail(reasoning);
  for (const field of ['user', 'safety_identifier', 'prompt_cache_key']) {
    const value = body[field];
    if (value !== undefined && value !== null && typeof value !== 'string') return fail(invalidType(field, 'a string', typeName(value)));
  }
  const truncation = body.truncation;
  if (truncation !== undefined && truncation !== null && (typeof truncation !== 'string' || !TRUNCATIONS.includes(truncation))) {
    return fail(
      typeof truncation === 'string'
        ? invalidValue('truncation', truncation, TRUNCATIONS)
        : invalidType('truncation', "one of 'auto' or 'disabled'", typeName(truncation)),
    );
  }
  const instructions = body.instructions;
  if (instructions !== undefined && instructions !== null && typeof instructions !== 'string') {
    return fail(invalidType('instructions', 'a string', typeName(instructions)));
  }
  const storeProblem = booleanProblem(body, 'store');
  if (storeProblem !== null) return fail(storeProblem);

  const conversation = body.conversation;
  let conversationId: string | null = null;
  if (conversation !== undefined && conversation !== null) {
    if (typeof conversation === 'string') conversationId = conversation;
    else if (
      typeof conversation === 'object' &&
      !Array.isArray(conversation) &&
      typeof (conversation as { id?: unknown }).id === 'string'
    ) {
      conversationId = (conversation as { id: string }).id;
    } else if (typeof conversation === 'object' && !Array.isArray(conversation)) {
      return fail(invalidRequest("Missing required parameter: 'conversation.id'.", 'conversation.id', 'missing_required_parameter'));
    } else {
      return fail(invalidType('conversation', 'one of a string or an object', typeName(conversation)));
    }
  }
  const previousResponseId = typeof previous === 'string' ? previous : null;
  if (previousResponseId !== null && conversationId !== null) {
    return fail(CONVERSATION_WITH_PREVIOUS_RESPONSE);
  }
  if (previousResponseId !== null) references.unshift(previousResponseId);
  if (conversationId !== null) references.unshift(conversationId);
  if (typeof instructions === 'string') promptChars += instructions.length;

  const request: ResponsesCreateRequest = {
    model,
    input: input as string | Record<string, unknown>[],
    instructions: typeof instructions === 'string' ? instructions : null,
    maxOutputTokens: maxOutputTokens ?? null,
    previousResponseId,
    conversationId,
    store: body.store !== false,
    background: body.background === true,
    stream: body.stream === true,
    includeEncryptedReasoning: Array.isArray(include) && include.includes('reasoning.encrypted_content'),
    includeObfuscation: (streamOptions as { include_obfuscation?: unknown } | null | undefined)?.include_obfuscation !== false,
    reasoning,
    promptChars,
    references,
    echo: {
      maxToolCalls: maxToolCalls ?? null,
      metadata: (metadata as Record<string, unknown> | null | undefined) ?? {},
      parallelToolCalls: body.parallel_tool_calls !== false,
      promptCacheKey: typeof body.prompt_cache_key === 'string' ? body.prompt_cache_key : null,
      safetyIdentifier: typeof body.safety_identifier === 'string' ? body.safety_identifier : null,
      serviceTier: typeof body.service_tier === 'string' ? body.service_tier : 'auto',
      temperature: typeof body.temperature === 'number' ? body.temperature : 1,
      text: text ?? { format: { type: 'text' }, verbosity: 'medium' },
      toolChoice: body.tool_choice ?? 'auto',
      tools: (tools as unknown[] | null | undefined) ?? [],
      topLogprobs: typeof body.top_logprobs === 'number' ? body.top_logprobs : 0,
      topP: typeof body.top_p === 'number' ? body.top_p : 1,
      truncation: typeof truncation === 'string' ? truncation : 'disabled',
      user: typeof body.user === 'string' ? body.user : null,
    },
  };
  return { ok: true, request };
}

/** An empty input (`""` or `[]`) is fine only when previous_response_id or conversation carries the context. */
export function inputIsEmpty(request: ResponsesCreateRequest): boolean {
  return request.input.length === 0;
}

/** Schema problems of one input item, or null. Ids are checked for their prefix here; whether this resource holds them, later. */
export function checkInputItem(value: unknown, param: string): ErrorReply | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return invalidRequest(
      `Invalid type for '${param}': expected an input item, but got ${typeName(value)} instead.`,
      param,
      'invalid_type',
    );
  }
  const item = value as Record<string, unknown>;
  const type = item.type;
  if (type !== undefined && (typeof type !== 'string' || !INPUT_ITEM_TYPES.includes(type))) {
    return invalidValue(param, typeof type === 'string' ? type : '', INPUT_ITEM_TYPES, param);
  }
  if (type === undefined || type === 'message') {
    const role = item.role;
    if (typeof role !== 'string' || !MESSAGE_ROLES.includes(role)) {
      return invalidValue(param, typeof role === 'string' ? role : '', MESSAGE_ROLES, param);
    }
    if (item.content === undefined || item.content === null) {
      return invalidRequest(`Missing required parameter: '${param}.content'.`, `${param}.content`, 'missing_required_parameter');
    }
  }
  if (type === 'item_reference' && typeof item.id !== 'string') {
    return invalidRequest(`Missing required parameter: '${param}.id'.`, `${param}.id`, 'missing_required_parameter');
  }
  if (item.id !== undefined && item.id !== null) {
    if (typeof item.id !== 'string') return invalidType(`${param}.id`, 'a string', typeName(item.id));
    const prefix = ID_PREFIX_BY_TYPE[typeof type === 'string' ? type : 'message'];
    if (prefix !== undefined && !item.id.startsWith(prefix)) {
      return invalidRequest(
        `Invalid '${param}.id': '${item.id}'. Expected an ID that begins with '${prefix}'.`,
        `${param}.id`,
        'invalid_value',
      );
    }
  }
  return null;
}

function parseReasoning(value: unknown): ReasoningSetting | ErrorReply | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) return invalidType('reasoning', 'an object', typeName(value));
  const { effort, summary, generate_summary: _legacy, ...unknown } = value as Record<string, unknown>;
  const unknownKey = Object.keys(unknown)[0];
  if (unknownKey !== undefined) {
    return invalidRequest(`Unknown parameter: 'reasoning.${unknownKey}'.`, `reasoning.${unknownKey}`, 'unknown_parameter');
  }
  if (effort !== undefined && effort !== null) {
    if (typeof effort !== 'string') return invalidType('reasoning.effort', `one of ${quoted(REASONING_EFFORTS, 'or')}`, typeName(effort));
    if (!REASONING_EFFORTS.includes(effort)) return invalidValue('reasoning.effort', effort, REASONING_EFFORTS);
  }
  if (summary !== undefined && summary !== null && (typeof summary !== 'string' || !REASONING_SUMMARIES.includes(summary))) {
    return invalidValue('reasoning.summary', String(summary), REASONING_SUMMARIES);
  }
  return { effort: typeof effort === 'string' ? effort : null, summary: typeof summary === 'string' ? summary : null };
}

function booleanProblem(body: Record<string, unknown>, field: string): ErrorReply | null {
  const value = body[field];
  if (value === undefined || value === null || typeof value === 'boolean') return null;
  return invalidType(field, 'a boolean', typeName(value));
}

function invalidType(param: string, expected: string, got: string): ErrorReply {
  return invalidRequest(`Invalid type for '${param}': expected ${expected}, but got ${got} instead.`, param, 'invalid_type');
}

function invalidValue(param: string, value: string, supported: readonly string[], shownParam = param): ErrorReply {
  return invalidRequest(`Invalid value: '${value}'. Supported values are: ${quoted(supported, 'and')}.`, shownParam, 'invalid_value');
}

/** 'a', 'b', and 'c' (OpenAI's lists use the serial comma; two values have none). */
function quoted(values: readonly string[], conjunction: 'and' | 'or'): string {
  const parts = values.map((value) => `'${value}'`);
  if (parts.length <= 2) return parts.join(` ${conjunction} `);
  return `${parts.slice(0, -1).join(', ')}, ${conjunction} ${parts.at(-1) ?? ''}`;
}
