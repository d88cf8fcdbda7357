/**
 * What a response generates, decided on arrival: the same text as chat (the deployment's
 * completionTokens words, one token each), after a reasoning item when the request asked for
 * reasoning, all within max_output_tokens (reasoning first, as the model spends it). The usage
 * counts input as chat counts prompts, plus the whole earlier context, as Azure bills it.
 */
import type { DeploymentRuntime } from '../deployments.ts';
import { completionText, countTextTokens } from '../tokens.ts';
import type { ReasoningSealer } from './encrypted.ts';
import { newId } from './ids.ts';
import { REPLY_PRIMING_TOKENS, TOKENS_PER_ITEM, type StoredItem } from './items.ts';
import type { ResponsesCreateRequest } from './request.ts';
import type { GenerationResult } from './state.ts';

/** Reasoning tokens by effort ('medium' when the request names none); 'none' reasons not at all. */
export const REASONING_TOKENS_BY_EFFORT: Readonly<Record<string, number>> = {
  none: 0,
  minimal: 16,
  low: 32,
  medium: 64,
  high: 128,
  xhigh: 256,
  max: 256,
};

export interface GenerationInput {
  deployment: DeploymentRuntime;
  request: ResponsesCreateRequest;
  /** Earlier context (previous response chain or conversation) + instructions + this input. */
  contextTokens: number;
  lineage: string;
  sealer: ReasoningSealer;
}

export function generate({ deployment, request, contextTokens, lineage, sealer }: GenerationInput): GenerationResult {
  const budget = request.maxOutputTokens ?? Infinity;
  const wantedReasoning = request.reasoning === null ? 0 : (REASONING_TOKENS_BY_EFFORT[request.reasoning.effort ?? 'medium'] ?? 0);
  const reasoningTokens = Math.min(wantedReasoning, budget);
  const textTokens = Math.min(deployment.completionTokens, budget - reasoningTokens);
  const incomplete = wantedReasoning + deployment.completionTokens > budget;
  const output: StoredItem[] = [];

  let reasoningItem: StoredItem | null = null;
  if (request.reasoning !== null && wantedReasoning > 0) {
    const id = newId('rs_', lineage);
    const item: Record<string, unknown> = { id, type: 'reasoning' };
    if (request.includeEncryptedReasoning) item.encrypted_content = sealer.seal({ id, tokens: reasoningTokens });
    item.summary = [];
    reasoningItem = { id, item, tokens: 0, holders: 0 };
    output.push(reasoningItem);
  }

  let messageId: string | null = null;
  const text = textTokens > 0 ? completionText(textTokens) : '';
  // A message unless max_output_tokens left no room for any text.
  if (textTokens > 0 || !incomplete) {
    messageId = newId('msg_', lineage);
    const item = {
      id: messageId,
      type: 'message',
      status: incomplete ? 'incomplete' : 'completed',
      content: [{ type: 'output_text', annotations: [], logprobs: [], text }],
      role: 'assistant',
    };
    const tokens = TOKENS_PER_ITEM + countTextTokens('assistant', deployment.encoding) + textTokens;
    output.push({ id: messageId, item, tokens, holders: 0 });
  }

  return {
    inputTokens: REPLY_PRIMING_TOKENS + contextTokens,
    reasoningTokens,
    textTokens,
    incomplete,
    output,
    text,
    messageId,
    reasoningItem,
  };
}

/** Tokens the generation takes at the latency model's pace: reasoning first, then the text. */
export function outputTokensOf(result: GenerationResult): number {
  return result.reasoningTokens + result.textTokens;
}
