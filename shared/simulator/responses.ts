/**
 * Non-streaming 200 bodies, shaped like real Azure captures (reference section 4): keys in the
 * order Azure sends them, content-filter annotations, usage details.
 */
import { randomBytes } from 'node:crypto';
import type { SimRequest } from './requests.ts';

const SAFE = { filtered: false, severity: 'safe' } as const;

/** Choice-level content_filter_results of an unfiltered answer. */
export const CHOICE_FILTER_RESULTS = { hate: SAFE, self_harm: SAFE, sexual: SAFE, violence: SAFE } as const;

/** prompt_filter_results of an unfiltered prompt. */
export const PROMPT_FILTER_RESULTS = [
  {
    prompt_index: 0,
    content_filter_results: { hate: SAFE, jailbreak: { filtered: false, detected: false }, self_harm: SAFE, sexual: SAFE, violence: SAFE },
  },
] as const;

export const CHOICE_FILTER_RESULTS_JSON = JSON.stringify(CHOICE_FILTER_RESULTS);
export const PROMPT_FILTER_RESULTS_JSON = JSON.stringify(PROMPT_FILTER_RESULTS);

/** What the simulator generated for one request, shared by the JSON and SSE writers. */
export interface Generation {
  id: string;
  created: number;
  model: string;
  systemFingerprint: string;
  promptTokens: number;
  /** Tokens per choice. */
  tokensPerChoice: number;
  finishReason: 'stop' | 'length';
}

export function completionTokensOf(generation: Generation, request: SimRequest): number {
  return generation.tokensPerChoice * request.choices;
}

export function chatUsage(promptTokens: number, completionTokens: number) {
  return {
    completion_tokens: completionTokens,
    completion_tokens_details: { accepted_prediction_tokens: 0, audio_tokens: 0, reasoning_tokens: 0, rejected_prediction_tokens: 0 },
    prompt_tokens: promptTokens,
    prompt_tokens_details: { audio_tokens: 0, cached_tokens: 0 },
    total_tokens: promptTokens + completionTokens,
  };
}

export function completionsUsage(promptTokens: number, completionTokens: number) {
  return { completion_tokens: completionTokens, prompt_tokens: promptTokens, total_tokens: promptTokens + completionTokens };
}

export function chatCompletionBody(generation: Generation, request: SimRequest, content: string): string {
  const choices = [];
  for (let index = 0; index < request.choices; index++) {
    choices.push({
      content_filter_results: CHOICE_FILTER_RESULTS,
      finish_reason: generation.finishReason,
      index,
      logprobs: null,
      message: { annotations: [], content, refusal: null, role: 'assistant' },
    });
  }
  return JSON.stringify({
    choices,
    created: generation.created,
    id: generation.id,
    model: generation.model,
    object: 'chat.completion',
    prompt_filter_results: PROMPT_FILTER_RESULTS,
    system_fingerprint: generation.systemFingerprint,
    usage: chatUsage(generation.promptTokens, completionTokensOf(generation, request)),
  });
}

export function textCompletionBody(generation: Generation, request: SimRequest, text: string): string {
  const choices = [];
  for (let index = 0; index < request.choices; index++) {
    choices.push({ content_filter_results: CHOICE_FILTER_RESULTS, finish_reason: generation.finishReason, index, logprobs: null, text });
  }
  return JSON.stringify({
    choices,
    created: generation.created,
    id: generation.id,
    model: generation.model,
    object: 'text_completion',
    prompt_filter_results: PROMPT_FILTER_RESULTS,
    usage: completionsUsage(generation.promptTokens, completionTokensOf(generation, request)),
  });
}

const DEFAULT_EMBEDDING_DIMENSIONS = 8;

/** Small deterministic unit vectors: cheap, and distinct per input position. */
export function embeddingsBody(model: string, request: SimRequest, promptTokens: number): string {
  const dimensions = request.dimensions ?? DEFAULT_EMBEDDING_DIMENSIONS;
  const data = [];
  for (let index = 0; index < request.inputCount; index++) {
    const vector = new Float32Array(dimensions);
    let norm = 0;
    for (let d = 0; d < dimensions; d++) {
      const value = Math.sin(index + 1 + d * 0.7);
      vector[d] = value;
      norm += value * value;
    }
    const scale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
    for (let d = 0; d < dimensions; d++) vector[d] = (vector[d] ?? 0) * scale;
    // The openai SDK asks for base64 by default: little-endian float32 bytes.
    const embedding = request.base64 ? Buffer.from(vector.buffer).toString('base64') : Array.from(vector);
    data.push({ embedding, index, object: 'embedding' });
  }
  return JSON.stringify({ data, model, object: 'list', usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } });
}

/**
 * Ids like Azure's `chatcmpl-` + 29 alphanumerics: a random per-process prefix plus a counter,
 * unique without per-request randomness.
 */
const ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const ID_PREFIX = Array.from(randomBytes(20), (byte) => ID_ALPHABET[byte % ID_ALPHABET.length]).join('');
let idCounter = 0;

export function nextCompletionId(prefix: 'chatcmpl-' | 'cmpl-'): string {
  idCounter = (idCounter + 1) % 62 ** 9;
  let suffix = '';
  let value = idCounter;
  for (let i = 0; i < 9; i++) {
    suffix = ID_ALPHABET[value % 62] + suffix;
    value = Math.floor(value / 62);
  }
  return prefix + ID_PREFIX + suffix;
}

/** A stable `fp_` + 10 hex digits per deployment. */
export function systemFingerprint(): string {
  return 'fp_' + randomBytes(5).toString('hex');
}
