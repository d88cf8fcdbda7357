/**
 * The countable parts of a Responses API create call (`POST /responses`), by chat's rule
 * (prompt-content.ts): the service renders the input items as turns of one conversation, so each
 * item costs TOKENS_PER_MESSAGE plus its text, and TOKENS_TO_PRIME_REPLY primes the reply.
 * - `instructions`: a system message. `input` as a string: one user message.
 * - Message items: role and content (text, output_text and refusal parts; `input_image` at chat's
 *   flat image cost; `input_file` not counted, as chat's file parts).
 * - `function_call`: name and arguments. `function_call_output`: its output, a string or parts.
 * - `reasoning`: its summary texts. Not `encrypted_content`: it is ciphertext of the model's own
 *   reasoning, so its tokens as text say nothing about what the model reads back, and a long
 *   random blob would spend the exact-count budget (estimate-request.ts) on nothing countable.
 *   For the same reason no item's `encrypted_content` counts (compaction items carry one too).
 * - `item_reference`: 0. It names an item stored upstream, whose size is unknown until the reply.
 * - Any other item (hosted tool calls and outputs, MCP items, custom tool calls): its JSON without
 *   its ids, as chat counts `tool_calls` JSON. Ids only point at stored state; the model does not
 *   read them as text.
 * - `tools` and a `text.format` JSON schema: their JSON, as chat's tools and response_format.
 *
 * Blind spot: a follow-up's real input starts with context held upstream (the earlier turns of
 * `previous_response_id` or `conversation`, a stored `prompt` template), which only the service
 * can read. The estimate counts the body alone; reconciliation after the reply (the real usage
 * charged at release, the deployment's rate-limit headers) corrects the window.
 */
import { imageTokens, isRecord, pushJson, TOKENS_PER_MESSAGE, TOKENS_TO_PRIME_REPLY, type PromptContent } from './prompt-parts.ts';

/** Top-level keys of an item that are not text for the model: references to stored state, opaque blobs. */
const UNCOUNTED_ITEM_KEYS = new Set(['id', 'call_id', 'approval_request_id', 'encrypted_content']);

export function collectResponses(body: Record<string, unknown>, content: PromptContent): void {
  if (typeof body.instructions === 'string') collectMessage({ role: 'system', content: body.instructions }, content);
  if (typeof body.input === 'string') collectMessage({ role: 'user', content: body.input }, content);
  else if (Array.isArray(body.input)) {
    for (const item of body.input) {
      if (isRecord(item)) collectItem(item, content);
    }
  }
  content.fixedTokens += TOKENS_TO_PRIME_REPLY;
  if (Array.isArray(body.tools)) {
    for (const tool of body.tools) pushJson(tool, content);
  }
  const format = isRecord(body.text) ? body.text.format : undefined;
  if (isRecord(format) && format.type === 'json_schema') {
    // The same fields chat's response_format.json_schema holds: name, description, schema, strict.
    const { type: _type, ...schema } = format;
    pushJson(schema, content);
  }
}

function collectItem(item: Record<string, unknown>, content: PromptContent): void {
  const type = item.type ?? undefined; // null as absent: the SDK types allow it for item references
  // Only messages and item references may leave out `type`; a message is known by its role.
  if (type === undefined ? item.role !== undefined : type === 'message') {
    collectMessage(item, content);
    return;
  }
  if (type === undefined || type === 'item_reference') return;
  content.fixedTokens += TOKENS_PER_MESSAGE;
  switch (type) {
    case 'function_call':
      pushString(item.name, content);
      pushString(item.arguments, content);
      break;
    case 'function_call_output':
      if (typeof item.output === 'string') content.texts.push(item.output);
      else collectParts(item.output, content);
      break;
    case 'reasoning':
      if (Array.isArray(item.summary)) {
        for (const part of item.summary) {
          if (isRecord(part)) pushString(part.text, content);
        }
      }
      break;
    default:
      pushJson(Object.fromEntries(Object.entries(item).filter(([key]) => !UNCOUNTED_ITEM_KEYS.has(key))), content);
  }
}

/** An input message: 3 tokens, its role and its content (a message's id, status and phase are not shown to the model). */
function collectMessage(message: Record<string, unknown>, content: PromptContent): void {
  content.fixedTokens += TOKENS_PER_MESSAGE;
  pushString(message.role, content);
  if (typeof message.content === 'string') content.texts.push(message.content);
  else collectParts(message.content, content);
}

/** Content parts of a message or of a function call's output. */
function collectParts(parts: unknown, content: PromptContent): void {
  if (!Array.isArray(parts)) return;
  for (const part of parts) {
    if (!isRecord(part)) continue;
    if (part.type === 'input_image') content.fixedTokens += imageTokens(part.detail);
    else if (typeof part.text === 'string')
      content.texts.push(part.text); // input_text, output_text
    else pushString(part.refusal, content); // input_file has neither: not counted, as chat's file parts
  }
}

function pushString(value: unknown, content: PromptContent): void {
  if (typeof value === 'string') content.texts.push(value);
}
