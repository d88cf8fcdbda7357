/**
 * Items: what `input` holds, what a response outputs, and what a conversation keeps. Each item is
 * shown with its id (input_items, conversation items) and counts as context for later requests
 * the way chat counts a message: 3 tokens of framing, the role, and the text.
 */
import { countTextTokens, type EncodingName } from '../tokens.ts';

/** One item this resource holds, shared by the responses and conversations that name it. */
export interface StoredItem {
  id: string;
  /** The item as the API shows it: id first, then type, status, content… */
  item: Record<string, unknown>;
  /** Input tokens it adds to a later request that carries it as context. */
  tokens: number;
  /** How many stored responses and conversations hold it; it leaves the resource at 0. */
  holders: number;
}

/** Per item, as the cookbook counts a chat message (3), plus 3 to prime the reply once per request. */
export const TOKENS_PER_ITEM = 3;
export const REPLY_PRIMING_TOKENS = 3;

/** The item types OpenAI's API accepts in `input` (its 2026 list, quoted in its 400s). */
export const INPUT_ITEM_TYPES: readonly string[] = [
  'additional_tools',
  'agent_message',
  'apply_patch_call',
  'apply_patch_call_output',
  'code_interpreter_call',
  'compaction',
  'compaction_trigger',
  'computer_call',
  'computer_call_output',
  'custom_tool_call',
  'custom_tool_call_output',
  'file_search_call',
  'function_call',
  'function_call_output',
  'image_generation_call',
  'item_reference',
  'local_shell_call',
  'local_shell_call_output',
  'mcp_approval_request',
  'mcp_approval_response',
  'mcp_call',
  'mcp_list_tools',
  'message',
  'multi_agent_call',
  'multi_agent_call_output',
  'program',
  'program_output',
  'reasoning',
  'shell_call',
  'shell_call_output',
  'tool_search_call',
  'tool_search_output',
  'web_search_call',
];

export const MESSAGE_ROLES: readonly string[] = ['assistant', 'system', 'developer', 'user'];

/** Item types whose ids the API checks for their prefix ("Expected an ID that begins with 'fc'."). */
export const ID_PREFIX_BY_TYPE: Readonly<Record<string, string>> = { message: 'msg', reasoning: 'rs', function_call: 'fc' };

/** A message's text: a string, or the text (or refusal) of each content part; other parts as JSON. */
export function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return content === undefined || content === null ? '' : JSON.stringify(content);
  let text = '';
  for (const part of content) {
    if (typeof part === 'object' && part !== null) {
      const { text: partText, refusal } = part as { text?: unknown; refusal?: unknown };
      if (typeof partText === 'string') text += partText;
      else if (typeof refusal === 'string') text += refusal;
      else text += JSON.stringify(part);
    } else if (typeof part === 'string') {
      text += part;
    }
  }
  return text;
}

/** Input tokens an item adds wherever it is context (the request that names it, or a later one). */
export function itemTokens(item: Record<string, unknown>, encoding: EncodingName): number {
  const type = typeof item.type === 'string' ? item.type : 'message';
  switch (type) {
    case 'message':
      return TOKENS_PER_ITEM + countTextTokens(String(item.role ?? ''), encoding) + countTextTokens(contentText(item.content), encoding);
    case 'reasoning':
      // Earlier turns' reasoning is not replayed to the model: it costs no input tokens.
      return 0;
    case 'function_call':
      return TOKENS_PER_ITEM + countTextTokens(String(item.name ?? ''), encoding) + countTextTokens(stringOf(item.arguments), encoding);
    case 'function_call_output':
      return TOKENS_PER_ITEM + countTextTokens(stringOf(item.output), encoding);
    default: {
      const { id: _id, ...rest } = item;
      return TOKENS_PER_ITEM + countTextTokens(JSON.stringify(rest), encoding);
    }
  }
}

/** Characters of an item's text, for the rate-limit estimate on arrival. */
export function itemChars(item: unknown): number {
  if (typeof item !== 'object' || item === null) return 0;
  const record = item as Record<string, unknown>;
  switch (record.type ?? 'message') {
    case 'message':
      return contentText(record.content).length;
    case 'function_call':
      return stringOf(record.arguments).length;
    case 'function_call_output':
      return stringOf(record.output).length;
    default:
      return 0;
  }
}

function stringOf(value: unknown): string {
  if (typeof value === 'string') return value;
  return value === undefined || value === null ? '' : JSON.stringify(value);
}

/**
 * A new input item as the API stores and lists it: `{id, type, status, content, role}` for messages
 * (string content becomes one input_text, or output_text for the assistant), the other types with
 * their fields after id and type.
 */
export function storedShape(id: string, raw: Record<string, unknown>): Record<string, unknown> {
  const type = typeof raw.type === 'string' ? raw.type : 'message';
  if (type === 'message') {
    const role = raw.role;
    const content =
      typeof raw.content === 'string'
        ? [
            role === 'assistant'
              ? { type: 'output_text', annotations: [], logprobs: [], text: raw.content }
              : { type: 'input_text', text: raw.content },
          ]
        : raw.content;
    return { id, type: 'message', status: raw.status ?? 'completed', content, role };
  }
  const { id: _id, type: _type, ...rest } = raw;
  const shaped: Record<string, unknown> = { id, type, ...rest };
  if (type.endsWith('_call') || type.endsWith('_output')) shaped.status ??= 'completed';
  return shaped;
}

/** `instructions` count like a system message; they are not carried to follow-ups. */
export function instructionTokens(instructions: string | null, encoding: EncodingName): number {
  if (instructions === null) return 0;
  return TOKENS_PER_ITEM + countTextTokens('system', encoding) + countTextTokens(instructions, encoding);
}
