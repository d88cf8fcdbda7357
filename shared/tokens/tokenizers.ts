/**
 * One exact token counter per encoding, built on first use and kept for the life of the process.
 *
 * Building one means parsing the whole vocabulary (o200k: 200k entries), which takes 100–450 ms of
 * synchronous work (loadtest/bench-tokenizer.ts, section 1). Left to the first request, that
 * stall hits every request in flight, so a server should call warmUpTokenizers() before it listens.
 */
import o200kBase from 'js-tiktoken/ranks/o200k_base';
import cl100kBase from 'js-tiktoken/ranks/cl100k_base';
import { BytePairTokenCounter, type BytePairVocabulary } from './byte-pair-counter.ts';
import type { Encoding } from './encoding-for-model.ts';

const VOCABULARIES: Record<Encoding, BytePairVocabulary> = {
  o200k_base: o200kBase,
  cl100k_base: cl100kBase,
};

const counters = new Map<Encoding, BytePairTokenCounter>();

export function tokenCounterFor(encoding: Encoding): BytePairTokenCounter {
  let counter = counters.get(encoding);
  if (counter === undefined) {
    counter = new BytePairTokenCounter(VOCABULARIES[encoding]);
    counters.set(encoding, counter);
  }
  return counter;
}

/** Exact token count of `text` in `encoding` (plain text: no chat overhead, no special tokens). */
export function countTokens(text: string, encoding: Encoding): number {
  return tokenCounterFor(encoding).count(text);
}

/** Builds the counters now, so that no request pays for it. Call at startup with the encodings in use. */
export function warmUpTokenizers(encodings: readonly Encoding[] = ['o200k_base', 'cl100k_base']): void {
  for (const encoding of encodings) tokenCounterFor(encoding);
}
