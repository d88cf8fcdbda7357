/**
 * What one Azure resource (one simulator instance) remembers for the Responses and Conversations
 * APIs: stored responses with their input and output items, conversations and their items, and the
 * key of its encrypted reasoning. In memory and bounded: past MAX_RESPONSES responses (or
 * MAX_CONVERSATIONS conversations) the oldest is evicted, as if its retention had run out.
 * Items are shared by id: a response that names an item by reference holds the same item, and an
 * item leaves the resource when the last response or conversation holding it is gone.
 */
import { ReasoningSealer } from './encrypted.ts';
import type { StoredItem } from './items.ts';
import type { ReasoningSetting, ResponsesCreateRequest } from './request.ts';

export const MAX_RESPONSES = 10_000;
export const MAX_CONVERSATIONS = 10_000;

export type ResponseStatus = 'queued' | 'in_progress' | 'completed' | 'incomplete' | 'cancelled' | 'failed';

/** What the generation produced (decided on arrival; shown once the response completes). */
export interface GenerationResult {
  inputTokens: number;
  reasoningTokens: number;
  /** Tokens of the message text (each generated word is one token). */
  textTokens: number;
  /** max_output_tokens cut the output short. */
  incomplete: boolean;
  output: StoredItem[];
  /** The message item's text ('' when there is none). */
  text: string;
  messageId: string | null;
  reasoningItem: StoredItem | null;
}

export interface ResponseRecord {
  id: string;
  /** The 16 hex digits its items and follow-ups share. */
  lineage: string;
  /** The deployment that created it: calls by id count against it. */
  deployment: string;
  /** The deployment's model version (the response's `model`). */
  model: string;
  createdAt: number;
  completedAt: number | null;
  status: ResponseStatus;
  request: ResponsesCreateRequest;
  reasoning: ReasoningSetting | null;
  inputItems: StoredItem[];
  result: GenerationResult;
  /** Input tokens of everything a follow-up inherits: the earlier context, this input, this output. */
  contextTokens: number;
  /** The arrival estimate the rate limiter took (background responses settle it when they end). */
  estimate: number;
  /** Pending status changes of a background response. */
  timers: NodeJS.Timeout[];
}

export interface ConversationRecord {
  id: string;
  lineage: string;
  createdAt: number;
  metadata: Record<string, unknown>;
  items: StoredItem[];
  /** Calls by this conversation's id count against this deployment (the simulator's first). */
  deployment: string;
}

export class ResourceState {
  readonly sealer = new ReasoningSealer();
  private readonly responses = new Map<string, ResponseRecord>();
  private readonly conversations = new Map<string, ConversationRecord>();
  private readonly items = new Map<string, StoredItem>();
  private readonly maxResponses: number;
  private readonly maxConversations: number;

  constructor(maxResponses = MAX_RESPONSES, maxConversations = MAX_CONVERSATIONS) {
    this.maxResponses = maxResponses;
    this.maxConversations = maxConversations;
  }

  response(id: string): ResponseRecord | undefined {
    return this.responses.get(id);
  }

  /** Stores a response and holds its items; evicts the oldest past the bound. */
  putResponse(record: ResponseRecord): void {
    this.responses.set(record.id, record);
    for (const item of record.inputItems) this.hold(item);
    for (const item of record.result.output) this.hold(item);
    while (this.responses.size > this.maxResponses) {
      const oldest = this.responses.keys().next().value as string;
      this.deleteResponse(oldest);
    }
  }

  /** Removes a response (stopping a background generation) and releases its items. */
  deleteResponse(id: string): ResponseRecord | undefined {
    const record = this.responses.get(id);
    if (record === undefined) return undefined;
    this.responses.delete(id);
    stopTimers(record);
    for (const item of record.inputItems) this.release(item);
    for (const item of record.result.output) this.release(item);
    return record;
  }

  item(id: string): StoredItem | undefined {
    return this.items.get(id);
  }

  conversation(id: string): ConversationRecord | undefined {
    return this.conversations.get(id);
  }

  putConversation(conversation: ConversationRecord): void {
    this.conversations.set(conversation.id, conversation);
    for (const item of conversation.items) this.hold(item);
    while (this.conversations.size > this.maxConversations) {
      const oldest = this.conversations.keys().next().value as string;
      this.deleteConversation(oldest);
    }
  }

  /** Deletes a conversation. Its items stay while a stored response still holds them. */
  deleteConversation(id: string): ConversationRecord | undefined {
    const conversation = this.conversations.get(id);
    if (conversation === undefined) return undefined;
    this.conversations.delete(id);
    for (const item of conversation.items) this.release(item);
    return conversation;
  }

  appendToConversation(conversation: ConversationRecord, items: readonly StoredItem[]): void {
    if (!this.conversations.has(conversation.id)) return; // deleted meanwhile
    for (const item of items) {
      conversation.items.push(item);
      this.hold(item);
    }
  }

  removeFromConversation(conversation: ConversationRecord, itemId: string): boolean {
    const index = conversation.items.findIndex((item) => item.id === itemId);
    if (index < 0) return false;
    const [item] = conversation.items.splice(index, 1);
    if (item !== undefined) this.release(item);
    return true;
  }

  /** Input tokens of a conversation's items: the context a response in it starts from. */
  conversationTokens(conversation: ConversationRecord): number {
    let total = 0;
    for (const item of conversation.items) total += item.tokens;
    return total;
  }

  /** Everything back to empty (sim.reset()), background generations stopped. */
  clear(): void {
    for (const record of this.responses.values()) stopTimers(record);
    this.responses.clear();
    this.conversations.clear();
    this.items.clear();
  }

  private hold(item: StoredItem): void {
    const known = this.items.get(item.id);
    if (known !== undefined && known !== item) {
      known.holders++;
      return;
    }
    item.holders++;
    this.items.set(item.id, item);
  }

  private release(item: StoredItem): void {
    const known = this.items.get(item.id);
    if (known === undefined) return;
    known.holders--;
    if (known.holders <= 0) this.items.delete(item.id);
  }
}

export function stopTimers(record: ResponseRecord): void {
  for (const timer of record.timers) clearTimeout(timer);
  record.timers.length = 0;
}
