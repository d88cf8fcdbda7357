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
 */
import type { Operation } from '../operation.ts';

export type { Operation };

/** Flat image estimates (gpt-4o-era pricing): 85 for detail "low"; 765 is a 1024×1024 image at high detail. */
export const IMAGE_TOKENS_LOW_DETAIL = 85;
export const IMAGE_TOKENS_OTHER = 765;

export const TOKENS_PER_MESSAGE = 3;
export const TOKENS_PER_NAME = 1;
export const TOKENS_TO_PRIME_REPLY = 3;

export interface PromptContent {
  /** Text whose tokens count, to be tokenized or estimated. */
  texts: string[];
  /** Tokens known without looking at text: message overheads, images, token-id arrays. */
  fixedTokens: number;
}

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
    const detail = isRecord(part.image_url) ? part.image_url.detail : undefined;
    content.fixedTokens += detail === 'low' ? IMAGE_TOKENS_LOW_DETAIL : IMAGE_TOKENS_OTHER;
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

function pushJson(value: unknown, content: PromptContent): void {
  const json = toJson(value);
  if (json !== '') content.texts.push(json);
}

function toJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? '';
  } catch {
    return ''; // cycles or BigInt: impossible from JSON.parse, but the type allows them
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
