/**
 * What a request will cost a deployment's token window, estimated when it arrives: prompt tokens
 * plus the most output it may ask for. It runs on the request path, so its cost is bounded. Up to
 * `exactUpToChars` characters of prompt text (and a cap on BPE merge work) the model's real
 * tokenizer counts the prompt; beyond either, a calibrated character estimate replaces it.
 *
 * It sees only the body. A Responses follow-up (`previous_response_id`, `conversation`) also reads
 * the earlier context held upstream, which no estimate here can count; the real usage charged
 * after the reply corrects the reservation (responses-content.ts).
 */
import { estimateTokensFromChars } from './char-estimate.ts';
import type { Encoding } from './encoding-for-model.ts';
import { maxOutputTokens } from './output-budget.ts';
import { collectPromptContent, type Operation } from './prompt-content.ts';
import { tokenCounterFor } from './tokenizers.ts';

/**
 * Prompts longer than this many characters are estimated, not tokenized.
 *
 * Source: loadtest/bench-tokenizer.ts, Node 24 on the shared 2-vCPU dev VM, four runs. Exact
 * counting of mixed English, markdown and code, each call on new text (cold piece cache), ran at
 * 5–10 MB/s (1.2–2.5 M tokens/s), so 1 ms buys 5.5–9 KB. js-tiktoken needs 4–7 ms for 10 KB. At
 * 8 KB a typical prompt costs about 1 ms cold, and about 0.6 ms once its pieces are cached
 * (repeated system prompts, bench section 7). 8 KB is about 2k tokens: a system prompt and a few
 * turns, which is most chat traffic. Past it, the char estimate errs by about ±10% on mixed text
 * (±25% on extreme single sources), small next to the max_tokens that long requests reserve.
 */
export const DEFAULT_EXACT_UP_TO_CHARS = 8_192;

/**
 * Cap on BPE merge work, per character of the size threshold: bytes of pieces that had to be merged
 * (see BytePairTokenCounter.countWithin), at about 0.7–1 µs each. At the default threshold that is
 * 2,048 bytes, about 1.5–2 ms on top of splitting 8 KB into pieces. A caller that raises
 * exactUpToChars accepts proportionally more of both.
 *
 * Typical English and code rarely reach it: most of their pieces are whole tokens or cached (bench
 * section 3b: all of 200 mixed prompts at the threshold stayed under it). Text without spaces
 * (Chinese, Japanese) or long runs of one character needs a merge for nearly every byte; past the
 * cap it falls back to the char estimate. The bench's hostile inputs (bench section 3) took at most
 * 1.8 ms at the threshold, instead of a cost growing with the input (js-tiktoken: 1 KB of unbroken
 * Chinese takes 0.7–1.3 s).
 */
export const MERGE_BYTES_PER_EXACT_CHAR = 0.25;

export interface EstimateOptions {
  encoding: Encoding;
  /** The pool's max_tokens for requests that set none. */
  defaultMaxTokens: number;
  /**
   * Prompts with more characters than this use the calibrated char estimate (default
   * DEFAULT_EXACT_UP_TO_CHARS). Counted over all the request's countable text: message strings,
   * text parts, tool JSON.
   */
  exactUpToChars?: number;
}

export interface Estimate {
  promptTokens: number;
  maxOutputTokens: number;
  total: number;
  method: 'tokenizer' | 'chars';
}

/** body is the parsed JSON the client sent (untrusted shape: never throw on odd shapes; count what is countable). */
export function estimateRequest(operation: Operation, body: unknown, opts: EstimateOptions): Estimate {
  const encoding: Encoding = opts.encoding === 'cl100k_base' ? 'cl100k_base' : 'o200k_base';
  const prompt = collectPromptContent(operation, body);

  let chars = 0;
  for (const text of prompt.texts) chars += text.length;
  const exactUpToChars =
    typeof opts.exactUpToChars === 'number' && opts.exactUpToChars >= 0 ? opts.exactUpToChars : DEFAULT_EXACT_UP_TO_CHARS;

  let method: Estimate['method'] = 'tokenizer';
  let textTokens =
    chars <= exactUpToChars ? tokenCounterFor(encoding).countWithin(prompt.texts, exactUpToChars * MERGE_BYTES_PER_EXACT_CHAR) : undefined;
  if (textTokens === undefined) {
    method = 'chars';
    textTokens = estimateTokensFromChars(prompt.texts, encoding);
  }

  const promptTokens = prompt.fixedTokens + textTokens;
  const outputTokens = maxOutputTokens(operation, body, opts.defaultMaxTokens);
  return {
    promptTokens,
    maxOutputTokens: outputTokens,
    total: Math.min(promptTokens + outputTokens, Number.MAX_SAFE_INTEGER),
    method,
  };
}
