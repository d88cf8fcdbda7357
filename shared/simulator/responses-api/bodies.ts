/**
 * The Responses and Conversations API's JSON, shaped like Azure's captures (2025-2026): the response
 * object with its keys in Azure's order (id, object, created_at, status, background, completed_at,
 * content_filters, …, usage, user, metadata), items, lists, and the SSE script of a streamed response.
 */
import { CHOICE_FILTER_RESULTS } from '../responses.ts';
import { COMPLETION_WORDS } from '../tokens.ts';
import type { StoredItem } from './items.ts';
import type { ConversationRecord, ResponseRecord, ResponseStatus } from './state.ts';

const OUTPUT_SHOWN: ReadonlySet<ResponseStatus> = new Set(['completed', 'incomplete']);

/** The response object as it stands at `status` (output and usage only once it completed). */
export function responseObject(record: ResponseRecord, status: ResponseStatus = record.status): Record<string, unknown> {
  const { request, result } = record;
  const done = OUTPUT_SHOWN.has(status);
  const echo = request.echo;
  const body: Record<string, unknown> = {
    id: record.id,
    object: 'response',
    created_at: record.createdAt,
    status,
    background: request.background,
    completed_at: done ? record.completedAt : null,
    content_filters: done ? contentFilters(request.promptChars, result.text.length) : null,
  };
  if (request.conversationId !== null) body.conversation = { id: request.conversationId };
  body.error = null;
  body.frequency_penalty = 0;
  body.incomplete_details = done && status === 'incomplete' ? { reason: 'max_output_tokens' } : null;
  body.instructions = request.instructions;
  body.max_output_tokens = request.maxOutputTokens;
  body.max_tool_calls = echo.maxToolCalls;
  body.model = record.model;
  body.output = done ? result.output.map((item) => item.item) : [];
  body.parallel_tool_calls = echo.parallelToolCalls;
  body.presence_penalty = 0;
  body.previous_response_id = request.previousResponseId;
  body.prompt_cache_key = echo.promptCacheKey;
  body.prompt_cache_retention = null;
  body.reasoning = record.reasoning ?? { effort: null, summary: null };
  body.safety_identifier = echo.safetyIdentifier;
  body.service_tier = echo.serviceTier;
  body.store = request.store;
  body.temperature = echo.temperature;
  body.text = echo.text;
  body.tool_choice = echo.toolChoice;
  body.tools = echo.tools;
  body.top_logprobs = echo.topLogprobs;
  body.top_p = echo.topP;
  body.truncation = echo.truncation;
  body.usage = done ? usage(record) : null;
  body.user = echo.user;
  body.metadata = echo.metadata;
  return body;
}

function usage(record: ResponseRecord) {
  const { inputTokens, reasoningTokens, textTokens } = record.result;
  const outputTokens = reasoningTokens + textTokens;
  return {
    input_tokens: inputTokens,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: outputTokens,
    output_tokens_details: { reasoning_tokens: reasoningTokens },
    total_tokens: inputTokens + outputTokens,
  };
}

/** Azure's per-response filter annotations (2026): the prompt's and the completion's, all "safe". */
function contentFilters(promptChars: number, completionChars: number) {
  const entry = (source: 'prompt' | 'completion', end: number) => ({
    blocked: false,
    source_type: source,
    content_filter_raw: [],
    content_filter_results: CHOICE_FILTER_RESULTS,
    content_filter_offsets: { start_offset: 0, end_offset: end, check_offset: 0 },
  });
  return [entry('prompt', promptChars), entry('completion', completionChars)];
}

/** How the generation ends when nothing cancels it. */
export function finalStatusOf(record: Pick<ResponseRecord, 'result'>): 'completed' | 'incomplete' {
  return record.result.incomplete ? 'incomplete' : 'completed';
}

export function deletedResponse(id: string): string {
  return JSON.stringify({ id, object: 'response', deleted: true });
}

export function conversationObject(conversation: ConversationRecord): Record<string, unknown> {
  return { id: conversation.id, object: 'conversation', created_at: conversation.createdAt, metadata: conversation.metadata };
}

export function deletedConversation(id: string): string {
  return JSON.stringify({ id, object: 'conversation.deleted', deleted: true });
}

export interface ListQuery {
  order: 'asc' | 'desc';
  limit: number;
  after: string | null;
}

/** A cursor page `{object:"list", data, first_id, last_id, has_more}` over items in storage order. */
export function itemList(items: readonly StoredItem[], query: ListQuery): string {
  const ordered = query.order === 'asc' ? items : [...items].reverse();
  let start = 0;
  if (query.after !== null) {
    const at = ordered.findIndex((item) => item.id === query.after);
    start = at < 0 ? ordered.length : at + 1;
  }
  const page = ordered.slice(start, start + query.limit);
  return JSON.stringify({
    object: 'list',
    data: page.map((item) => item.item),
    first_id: page[0]?.id ?? null,
    last_id: page.at(-1)?.id ?? null,
    has_more: start + page.length < ordered.length,
  });
}

/**
 * The stream of a response, grouped into ticks of the latency model like a chat stream: tick 0 (at
 * the first token) holds response.created, response.in_progress, the reasoning item, the message's
 * output_item.added and content_part.added and the first delta; tick k the (k+1)-th delta; the last
 * tick (after the last token) the .done events and response.completed (or response.incomplete).
 * A background response starts queued: response.created, then response.queued, then response.in_progress.
 */
export interface ResponseStreamScript {
  events: string[];
  tickEnds: number[];
}

const WORD_JSON = COMPLETION_WORDS.map((word) => JSON.stringify(word));
/** `obfuscation` pads each delta event towards a constant size (a side-channel mitigation); fixed per word here. */
const OBFUSCATION = COMPLETION_WORDS.map((word, index) => obfuscationFor(16 - Math.min(word.length, 15), index));

export function buildResponseStream(record: ResponseRecord, includeObfuscation: boolean): ResponseStreamScript {
  const events: string[] = [];
  const tickEnds: number[] = [];
  let sequence = 0;
  const push = (type: string, fields: string): void => {
    events.push(`event: ${type}\ndata: {"type":"${type}","sequence_number":${sequence++}${fields}}\n\n`);
  };
  const { result } = record;
  const startStatus: ResponseStatus = record.request.background ? 'queued' : 'in_progress';
  push('response.created', `,"response":${JSON.stringify(responseObject(record, startStatus))}`);
  if (startStatus === 'queued') push('response.queued', `,"response":${JSON.stringify(responseObject(record, 'queued'))}`);
  push('response.in_progress', `,"response":${JSON.stringify(responseObject(record, 'in_progress'))}`);

  let outputIndex = 0;
  for (const stored of result.output) {
    const item = stored.item;
    if (item.type === 'reasoning') {
      const { encrypted_content: _sealed, ...added } = item;
      push('response.output_item.added', `,"output_index":${outputIndex},"item":${JSON.stringify(added)}`);
      push('response.output_item.done', `,"output_index":${outputIndex},"item":${JSON.stringify(item)}`);
      outputIndex++;
      continue;
    }
    // The message: its text streams one generated token per delta.
    const idJson = JSON.stringify(stored.id);
    const at = `"item_id":${idJson},"output_index":${outputIndex},"content_index":0`;
    push(
      'response.output_item.added',
      `,"output_index":${outputIndex},"item":{"id":${idJson},"type":"message","status":"in_progress","content":[],"role":"assistant"}`,
    );
    push('response.content_part.added', `,${at},"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}`);
    for (let token = 0; token < result.textTokens; token++) {
      const word = token % WORD_JSON.length;
      const obfuscation = includeObfuscation ? `,"obfuscation":"${OBFUSCATION[word] ?? ''}"` : '';
      push('response.output_text.delta', `,${at},"delta":${WORD_JSON[word] ?? '""'},"logprobs":[]${obfuscation}`);
      tickEnds.push(events.length);
    }
    const textJson = JSON.stringify(result.text);
    push('response.output_text.done', `,${at},"text":${textJson},"logprobs":[]`);
    push('response.content_part.done', `,${at},"part":{"type":"output_text","annotations":[],"logprobs":[],"text":${textJson}}`);
    push('response.output_item.done', `,"output_index":${outputIndex},"item":${JSON.stringify(item)}`);
    outputIndex++;
  }
  const finalStatus = finalStatusOf(record);
  push(
    finalStatus === 'incomplete' ? 'response.incomplete' : 'response.completed',
    `,"response":${JSON.stringify(responseObject(record, finalStatus))}`,
  );
  tickEnds.push(events.length);
  return { events, tickEnds };
}

function obfuscationFor(length: number, seed: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let text = '';
  let value = seed * 7919 + 17;
  for (let index = 0; index < length; index++) {
    value = (value * 1103515245 + 12345) % 2147483648;
    text += alphabet[value % alphabet.length];
  }
  return text;
}
