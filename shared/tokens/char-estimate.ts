/**
 * Token estimate from text length, for prompts too long to tokenize on the request path.
 *
 * Cost: one native UTF-8 length call per string (no scan in JavaScript): about 0.6 ms per MB, far
 * below the 100 ms exact counting would take.
 *
 * tokens ≈ chars / CHARS_PER_TOKEN + extraUtf8Bytes × TOKENS_PER_EXTRA_UTF8_BYTE
 *
 * - chars counts UTF-16 code units (String length).
 * - extraUtf8Bytes = UTF-8 bytes − chars: 0 for ASCII, about 1 per Cyrillic, Greek or accented
 *   letter, about 2 per CJK character.
 *
 * Without the second term, Chinese or Japanese text would be underestimated about 2.5× (about 1.3–1.7
 * chars per token instead of about 4.1).
 */
import { Buffer } from 'node:buffer';
import type { Encoding } from './encoding-for-model.ts';

/**
 * Calibrated with loadtest/bench-tokenizer.ts (section 5) on text from installed packages.
 * English: the prose of @types/node's doc comments (400 KB) and TypeScript's license notices.
 * Code: the openai SDK and zod TypeScript sources, Express and yaml JavaScript (1.2 MB).
 *
 * | chars per token         | o200k_base | cl100k_base |
 * |-------------------------|-----------:|------------:|
 * | English                 |       4.40 |        4.42 |
 * | code                    |       3.83 |        3.79 |
 * | markdown READMEs (check)|       4.13 |        4.13 |
 *
 * The value used is the mean of English and code. It errs by the same fraction on each (about
 * 7%): over on English, under on code. Single sources spread wider: −18% on type-heavy TypeScript
 * (zod, 3.2–3.3 chars/token), +26% on license prose (5.2), within ±7% on the rest. It is also
 * close to Azure's own admission estimate, which is character-based (about 4 chars per token;
 * reference notes, section 2).
 */
export const CHARS_PER_TOKEN: Readonly<Record<Encoding, number>> = {
  o200k_base: 4.11,
  cl100k_base: 4.1,
};

/**
 * Fitted on TypeScript's translated compiler messages (de, fr, ru, ja, zh-cn, ko) for the smallest
 * worst-case error. One weight cannot suit both 2-byte scripts (Cyrillic: overestimated) and
 * 3-byte ones (CJK: underestimated). Worst error: o200k ±33% (ru +33%, zh −32%); cl100k ±20%.
 * Without the term, CJK would be underestimated by 60–67%. cl100k needs more tokens per non-ASCII
 * byte because its vocabulary has far fewer non-English tokens.
 */
export const TOKENS_PER_EXTRA_UTF8_BYTE: Readonly<Record<Encoding, number>> = {
  o200k_base: 0.14,
  cl100k_base: 0.29,
};

/** Estimated token count of all `texts` together (rounded up once, not per string). */
export function estimateTokensFromChars(texts: readonly string[], encoding: Encoding): number {
  let chars = 0;
  let extraUtf8Bytes = 0;
  for (const text of texts) {
    chars += text.length;
    extraUtf8Bytes += Buffer.byteLength(text, 'utf8') - text.length;
  }
  return Math.ceil(chars / CHARS_PER_TOKEN[encoding] + extraUtf8Bytes * TOKENS_PER_EXTRA_UTF8_BYTE[encoding]);
}
