/**
 * Token counting for `usage`, and the generated completion text.
 *
 * Prompt tokens are counted exactly as js-tiktoken encodes them (same rank tables, same
 * pre-tokenizer pattern, same lowest-rank-first merge), but counted rather than encoded, and
 * cheaply enough for the hot path:
 * - js-tiktoken's Tiktoken takes over a second to build its tables and ~20 µs of set-up per
 *   encode() call; this counter builds in a fraction of that and keys ranks by byte strings.
 * - Pre-token pieces (roughly words) repeat across prompts, so their counts are cached: a new
 *   prompt costs one regex scan plus map look-ups.
 * Each encoding is built once per process, on first need; startSimulator builds the ones its
 * deployments use. test/simulator-tokens.test.ts checks the counts against js-tiktoken itself.
 */
import o200kBase from 'js-tiktoken/ranks/o200k_base';
import cl100kBase from 'js-tiktoken/ranks/cl100k_base';

export type EncodingName = 'o200k_base' | 'cl100k_base';

/** js-tiktoken's rank file: the pre-tokenizer regex and "! <first rank> <base64 token> ..." lines. */
interface RankFile {
  pat_str: string;
  bpe_ranks: string;
}

const RANK_FILES: Record<EncodingName, RankFile> = { o200k_base: o200kBase, cl100k_base: cl100kBase };

/** Beyond this many characters, counting exactly costs more than a simulator should spend. */
const EXACT_COUNT_MAX_CHARS = 200_000;
/** Byte-pair merging is quadratic in a piece's length; longer pieces ("xxxx…" padding) count as bytes/4. */
const EXACT_PIECE_MAX_BYTES = 256;
/** Simulated traffic repeats its prompts; remembering short strings' counts skips even the scan. */
const TEXT_CACHE_MAX_ENTRIES = 2000;
const TEXT_CACHE_MAX_CHARS = 4000;
const PIECE_CACHE_MAX_ENTRIES = 200_000;

export class TokenCounter {
  /** Token bytes as a latin1 string (one char per byte) -> rank. */
  private readonly ranks = new Map<string, number>();
  private readonly pattern: RegExp;
  private readonly pieceCounts = new Map<string, number>();
  private readonly textCounts = new Map<string, number>();

  constructor(file: RankFile) {
    this.pattern = new RegExp(file.pat_str, 'gu');
    for (const line of file.bpe_ranks.split('\n')) {
      if (line === '') continue;
      const fields = line.split(' ');
      const firstRank = Number.parseInt(fields[1] ?? '', 10);
      for (let index = 2; index < fields.length; index++) {
        // atob yields the token's bytes as a binary (latin1) string.
        this.ranks.set(atob(fields[index] as string), firstRank + index - 2);
      }
    }
  }

  /** Tokens of `text`, special-token text counted as plain text. */
  count(text: string): number {
    if (text.length === 0) return 0;
    if (text.length > EXACT_COUNT_MAX_CHARS) return Math.ceil(text.length / 4);
    const cacheable = text.length <= TEXT_CACHE_MAX_CHARS;
    if (cacheable) {
      const cached = this.textCounts.get(text);
      if (cached !== undefined) return cached;
    }
    let total = 0;
    for (const match of text.matchAll(this.pattern)) total += this.countPiece(match[0]);
    if (cacheable) {
      if (this.textCounts.size >= TEXT_CACHE_MAX_ENTRIES) this.textCounts.clear();
      this.textCounts.set(text, total);
    }
    return total;
  }

  private countPiece(piece: string): number {
    const cached = this.pieceCounts.get(piece);
    if (cached !== undefined) return cached;
    const bytes = Buffer.from(piece, 'utf8').toString('latin1');
    let count: number;
    if (this.ranks.has(bytes)) count = 1;
    else if (bytes.length > EXACT_PIECE_MAX_BYTES) count = Math.ceil(bytes.length / 4);
    else count = this.mergeCount(bytes);
    if (this.pieceCounts.size >= PIECE_CACHE_MAX_ENTRIES) this.pieceCounts.clear();
    this.pieceCounts.set(piece, count);
    return count;
  }

  /** js-tiktoken's bytePairMerge: repeatedly merge the adjacent pair of lowest rank (leftmost on ties). */
  private mergeCount(bytes: string): number {
    const starts: number[] = [];
    for (let index = 0; index <= bytes.length; index++) starts.push(index);
    while (starts.length > 2) {
      let lowestRank = Infinity;
      let lowestAt = -1;
      for (let part = 0; part < starts.length - 2; part++) {
        const rank = this.ranks.get(bytes.slice(starts[part], starts[part + 2]));
        if (rank !== undefined && rank < lowestRank) {
          lowestRank = rank;
          lowestAt = part;
        }
      }
      if (lowestAt < 0) break;
      starts.splice(lowestAt + 1, 1);
    }
    // js-tiktoken drops parts without a rank (none exist for these byte-level vocabularies).
    let count = 0;
    for (let part = 0; part < starts.length - 1; part++) {
      if (starts.length === 2 || this.ranks.has(bytes.slice(starts[part], starts[part + 1]))) count++;
    }
    return count;
  }
}

const counters = new Map<EncodingName, TokenCounter>();

/** tiktoken's model table: o200k_base for gpt-4o, 4.1, 4.5, 5 and the o-series; cl100k_base before that. */
export function encodingForModel(model: string): EncodingName {
  return /^(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o\d)/.test(model) ? 'o200k_base' : 'cl100k_base';
}

export function getTokenCounter(name: EncodingName): TokenCounter {
  let counter = counters.get(name);
  if (!counter) {
    counter = new TokenCounter(RANK_FILES[name]);
    counters.set(name, counter);
  }
  return counter;
}

export function countTextTokens(text: string, encoding: EncodingName): number {
  return getTokenCounter(encoding).count(text);
}

/** OpenAI cookbook rules for chat: 3 per message, +1 per name, +3 to prime the reply. */
const TOKENS_PER_MESSAGE = 3;
const TOKENS_PER_NAME = 1;
const REPLY_PRIMING_TOKENS = 3;

export function countChatPromptTokens(messages: readonly unknown[], encoding: EncodingName): number {
  let total = REPLY_PRIMING_TOKENS;
  for (const message of messages) {
    total += TOKENS_PER_MESSAGE;
    if (message === null || typeof message !== 'object') continue;
    for (const [key, value] of Object.entries(message)) {
      if (value === null || value === undefined) continue;
      total += countTextTokens(textOf(value), encoding);
      if (key === 'name') total += TOKENS_PER_NAME;
    }
  }
  return total;
}

/** The text a value contributes: strings as is, content parts by their text, anything else as JSON. */
function textOf(value: unknown): string {
  if (typeof value === 'string') return value;
  if (Array.isArray(value) && value.every(isTextPart)) return value.map((part) => part.text).join('');
  return JSON.stringify(value);
}

function isTextPart(part: unknown): part is { text: string } {
  return typeof part === 'object' && part !== null && typeof (part as { text?: unknown }).text === 'string';
}

/**
 * The generated text: common words, each exactly one token (with its leading space) in both
 * o200k_base and cl100k_base, so usage.completion_tokens equals the tokens of the text
 * (test/simulator-tokens.test.ts checks this against the real encoders).
 */
export const COMPLETION_WORDS: readonly string[] = [
  ' the',
  ' quick',
  ' brown',
  ' fox',
  ' jumps',
  ' over',
  ' the',
  ' lazy',
  ' dog',
  ' and',
  ' then',
  ' it',
  ' runs',
  ' back',
  ' to',
  ' the',
  ' house',
  ' where',
  ' a',
  ' small',
  ' cat',
  ' is',
  ' sleeping',
  ' in',
  ' the',
  ' warm',
  ' sun',
  ' while',
  ' the',
  ' birds',
  ' sing',
  ' from',
  ' every',
  ' tree',
  '.',
];

/** The i-th generated token. */
export function completionWord(index: number): string {
  return COMPLETION_WORDS[index % COMPLETION_WORDS.length] as string;
}

const completionTextCache = new Map<number, string>();

/** The whole text of `tokens` generated tokens (cached per length: deployments use a few lengths). */
export function completionText(tokens: number): string {
  let text = completionTextCache.get(tokens);
  if (text === undefined) {
    text = '';
    for (let index = 0; index < tokens; index++) text += completionWord(index);
    if (completionTextCache.size < 1000) completionTextCache.set(tokens, text);
  }
  return text;
}
