/**
 * Pulls the countable parts out of a request body, whatever its shape. Bodies are untrusted client
 * JSON: anything unexpected is skipped, never thrown on.
 *
 * What is counted follows the OpenAI cookbook's chat rule (reference notes, section 7). Every
 * message costs 3 tokens plus the tokens of each of its string values, a `name` costs 1 more, and
 * 3 more prime the reply. The rest are approximations, because the service's exact formatting of
 * these parts is not published:
 * - Images: a flat IMAGE_TOKENS_LOW_DETAIL or IMAGE_TOKENS_OTHER per image. The real cost depends
 *   on the image size, which is unknown until the image is fetched and decoded.
 * - Tool and function definitions, `response_format` JSON schemas and non-string message fields
 *   (an assistant's `tool_calls`, `function_call`): counted as their JSON text. The service
 *   renders them in its own syntax, so this is close but not exact.
 * - Not counted: audio and file parts, and Azure `data_sources` (retrieved documents are added by
 *   the service).
 * The Responses API's create call applies the same rule to its items (responses-content.ts).
 */
import type { Operation } from '../operation.ts';
import {
  imageTokens,
  isRecord,
  pushJson,
  TOKENS_PER_MESSAGE,
  TOKENS_PER_NAME,
  TOKENS_TO_PRIME_REPLY,
  type PromptContent,
} from './prompt-parts.ts';
import { collectResponses } from './responses-content.ts';

export type { Operation, PromptContent };
export { IMAGE_TOKENS_LOW_DETAIL, IMAGE_TOKENS_OTHER, TOKENS_PER_MESSAGE, TOKENS_PER_NAME, TOKENS_TO_PRIME_REPLY } from './prompt-parts.ts';

export function collectPromptContent(operation: Operation, body: unknown): PromptContent {
  const content: PromptContent = { texts: [], fixedTokens: 0 };
  const fields = isRecord(body) ? body : {};
  switch (operation) {
    case 'chat/completions':
      collectChat(fields, content);
      break;
    case 'completions':
      collectTextOrTokenIds(fields.prompt, content);
      if (typeof fields.suffix === 'string') content.texts.push(fields.suffix);
      break;
    case 'embeddings':
      collectTextOrTokenIds(fields.input, content);
      break;
    case 'responses':
      collectResponses(fields, content);
      break;
  }
  return content;
}

function collectChat(body: Record<string, unknown>, content: PromptContent): void {
  if (Array.isArray(body.messages)) {
    for (const message of body.messages) {
      if (isRecord(message)) collectMessage(message, content);
    }
  }
  content.fixedTokens += TOKENS_TO_PRIME_REPLY;
  for (const definitions of [body.tools, body.functions]) {
    if (!Array.isArray(definitions)) continue;
    for (const definition of definitions) pushJson(definition, content);
  }
  if (isRecord(body.response_format) && body.response_format.json_schema !== undefined) {
    pushJson(body.response_format.json_schema, content);
  }
}

function collectMessage(message: Record<string, unknown>, content: PromptContent): void {
  content.fixedTokens += TOKENS_PER_MESSAGE;
  for (const [key, value] of Object.entries(message)) {
    if (typeof value === 'string') {
      content.texts.push(value);
      if (key === 'name') content.fixedTokens += TOKENS_PER_NAME;
    } else if (key === 'content' && Array.isArray(value)) {
      for (const part of value) collectContentPart(part, content);
    } else if (value !== null && typeof value === 'object') {
      pushJson(value, content);
    }
  }
}

function collectContentPart(part: unknown, content: PromptContent): void {
  if (typeof part === 'string') {
    content.texts.push(part);
    return;
  }
  if (!isRecord(part)) return;
  if (typeof part.text === 'string') content.texts.push(part.text);
  else if (typeof part.refusal === 'string') content.texts.push(part.refusal);
  else if (part.type === 'image_url' || part.image_url !== undefined) {
    content.fixedTokens += imageTokens(isRecord(part.image_url) ? part.image_url.detail : undefined);
  }
}

/** A prompt or input: a string, an array of strings, an array of token ids, or an array of those arrays. */
function collectTextOrTokenIds(value: unknown, content: PromptContent): void {
  if (typeof value === 'string') {
    content.texts.push(value);
    return;
  }
  if (!Array.isArray(value)) return;
  for (const item of value) {
    if (typeof item === 'string') content.texts.push(item);
    else if (typeof item === 'number') content.fixedTokens += 1;
    else if (Array.isArray(item)) content.fixedTokens += item.length;
  }
}
