/**
 * Exact BPE token counting with tiktoken's vocabularies (the rank tables and split patterns that
 * js-tiktoken ships), but without js-tiktoken's encoder.
 *
 * Why not `getEncoding(...).encode(text).length`? loadtest/bench-tokenizer.ts measured js-tiktoken
 * 1.0.21 at:
 * - 250–600 k tokens/s on mixed text (10 KB: 4–7 ms);
 * - 1.3–2.5 s to build the o200k encoder;
 * - a merge loop quadratic in the length of one pre-tokenized piece, with string joins at every
 *   step: 1 KB of spaces takes 60–170 ms, 1 KB of unbroken Chinese 0.7–1.3 s.
 * So a small hostile prompt could stall the event loop whatever size cap we chose.
 *
 * This counter does the same work with byte strings as map keys, a linear scan for short pieces, a
 * heap for long ones (O(n log n)) and a cache of merged pieces. It runs 2–8× faster on real text,
 * builds 4–7× faster, and gives the same counts as js-tiktoken (`encode(text, [], []).length`).
 * test/tokens-parity.test.ts checks this on prose, code, several scripts, long runs and random
 * Unicode.
 *
 * Special-token strings such as "<|endoftext|>" in client text count as ordinary text: the
 * service does not turn user text into control tokens.
 */
import { Buffer } from 'node:buffer';

/** The shape of js-tiktoken's `ranks/*` modules. */
export interface BytePairVocabulary {
  /** The pre-tokenizer regex source (applied with the `u` flag). */
  pat_str: string;
  /** Lines of "<tag> <first rank> <base64 token> <base64 token> ...", ranks consecutive from the first. */
  bpe_ranks: string;
}

/** Pieces up to this many UTF-8 bytes merge with a linear scan; the heap costs more than it saves on short pieces. */
const LINEAR_MERGE_MAX_BYTES = 48;

/** Bounds the merged-piece cache (entries × bytes): it is simply emptied when full. */
const MERGED_PIECE_CACHE_SIZE = 8192;
const CACHED_PIECE_MAX_BYTES = 64;

/**
 * Whole texts this long are remembered with their count: a system prompt, few-shot examples and
 * tool definitions come back with every request of an application, and counting 4 KB costs about
 * 40 µs where looking it up costs its hash (well under 1 µs). Shorter texts cost little to count;
 * longer ones are past the exact limit anyway (estimate-request.ts). At most TEXT_CACHE_SIZE of
 * them, the oldest forgotten first: a few MB at worst.
 */
const TEXT_CACHE_MIN_CHARS = 256;
const TEXT_CACHE_MAX_CHARS = 8192;
const TEXT_CACHE_SIZE = 256;

/** Heap keys pack (rank, start) into one number: ranks are below 2^18 and starts below 2^32. */
const START_BITS = 2 ** 32;

export class BytePairTokenCounter {
  /** Token bytes as a latin1 "byte string" (one char per byte) → rank. */
  readonly #rankByBytes: Map<string, number>;
  readonly #pieceSplitter: RegExp;
  /**
   * The same pattern, anchored at lastIndex: `test` then says where the piece ends without building
   * a match array per piece (pieces are contiguous for tiktoken's patterns; `exec` covers any gap).
   */
  readonly #pieceAtCursor: RegExp;
  /** Token counts of recently merged pieces: prose and code repeat their rare words and identifiers. */
  readonly #mergedPieceCounts = new Map<string, number>();
  /** Token counts of whole texts seen lately (TEXT_CACHE_*). */
  readonly #textCounts = new Map<string, number>();
  /** Bytes #countText merged (neither whole tokens nor cached pieces) in its last call. */
  #lastMergedBytes = 0;

  constructor(vocabulary: BytePairVocabulary) {
    this.#rankByBytes = parseRanks(vocabulary.bpe_ranks);
    this.#pieceSplitter = new RegExp(vocabulary.pat_str, 'gu');
    this.#pieceAtCursor = new RegExp(vocabulary.pat_str, 'uy');
  }

  /** Number of tokens `text` encodes to. */
  count(text: string): number {
    return this.countWithin([text], Infinity) ?? 0;
  }

  /**
   * Total tokens of `texts`, or undefined once the bytes of pieces merged (neither a whole token
   * nor cached) would exceed `maxMergeBytes`.
   *
   * Splitting text into pieces costs about the same per character for any text, so a cap on
   * characters bounds it. Merging does not: it is nearly free for prose (most pieces are whole
   * tokens or cached) but dominates for scripts without spaces (Chinese, Japanese, Thai) and for
   * long runs of one character, so it gets its own cap, checked before each merge is done.
   * Merging costs about 0.7–1 µs per byte on the dev VM on either path, whatever the piece
   * length (loadtest/bench-tokenizer.ts, section 4): the map lookups dominate, not the scan.
   */
  countWithin(texts: readonly string[], maxMergeBytes: number): number | undefined {
    let tokens = 0;
    let mergeBudget = maxMergeBytes;
    for (const text of texts) {
      const cacheable = text.length >= TEXT_CACHE_MIN_CHARS && text.length <= TEXT_CACHE_MAX_CHARS;
      const remembered = cacheable ? this.#textCounts.get(text) : undefined;
      if (remembered !== undefined) {
        tokens += remembered;
        continue;
      }
      const counted = this.#countText(text, mergeBudget);
      if (counted === undefined) return undefined;
      mergeBudget -= this.#lastMergedBytes;
      tokens += counted;
      if (cacheable) {
        if (this.#textCounts.size >= TEXT_CACHE_SIZE) this.#textCounts.delete(this.#textCounts.keys().next().value!);
        this.#textCounts.set(text, counted);
      }
    }
    return tokens;
  }

  /** Tokens of one text, or undefined once its merged bytes would exceed `maxMergeBytes` (#lastMergedBytes: how many it merged). */
  #countText(text: string, maxMergeBytes: number): number | undefined {
    const splitter = this.#pieceSplitter;
    const atCursor = this.#pieceAtCursor;
    let tokens = 0;
    let mergedBytes = 0;
    try {
      let cursor = 0;
      while (cursor < text.length) {
        let start = cursor;
        atCursor.lastIndex = cursor;
        if (atCursor.test(text)) {
          cursor = atCursor.lastIndex;
        } else {
          // Nothing matches here: find the next match, as a global exec would (text in between is skipped).
          splitter.lastIndex = cursor;
          const match = splitter.exec(text);
          if (match === null) break;
          start = match.index;
          cursor = start + match[0].length;
        }
        if (cursor === start) {
          // The vocabularies' patterns never match empty, but a bad pattern must not loop forever.
          cursor = start + 1;
          continue;
        }
        const piece = text.slice(start, cursor);
        const bytes = utf8ByteString(piece);
        if (this.#rankByBytes.has(bytes)) {
          tokens += 1; // most pieces are whole tokens
          continue;
        }
        const cached = this.#mergedPieceCounts.get(bytes);
        if (cached !== undefined) {
          tokens += cached;
          continue;
        }
        mergedBytes += bytes.length;
        if (mergedBytes > maxMergeBytes) return undefined;
        const pieceTokens =
          bytes.length <= LINEAR_MERGE_MAX_BYTES
            ? countPartsLinear(bytes, this.#rankByBytes)
            : countPartsWithHeap(bytes, this.#rankByBytes);
        if (bytes.length <= CACHED_PIECE_MAX_BYTES) {
          if (this.#mergedPieceCounts.size >= MERGED_PIECE_CACHE_SIZE) this.#mergedPieceCounts.clear();
          this.#mergedPieceCounts.set(bytes, pieceTokens);
        }
        tokens += pieceTokens;
      }
      this.#lastMergedBytes = mergedBytes;
      return tokens;
    } finally {
      splitter.lastIndex = 0;
      atCursor.lastIndex = 0;
    }
  }
}

function parseRanks(bpeRanks: string): Map<string, number> {
  const rankByBytes = new Map<string, number>();
  for (const line of bpeRanks.split('\n')) {
    if (line === '') continue;
    const fields = line.split(' ');
    const firstRank = Number.parseInt(fields[1] ?? '', 10);
    for (let i = 2; i < fields.length; i++) {
      // atob decodes base64 straight to a latin1 byte string, the key format used for lookups.
      rankByBytes.set(atob(fields[i] ?? ''), firstRank + i - 2);
    }
  }
  return rankByBytes;
}

/** Above this many chars Buffer's native encoder wins; below it its call overhead dominates. */
const NATIVE_UTF8_MIN_CHARS = 64;

/**
 * UTF-8 bytes of `text` as a string of chars 0–255. Lone surrogates become U+FFFD (EF BF BD), as
 * TextEncoder does in js-tiktoken.
 */
export function utf8ByteString(text: string): string {
  let ascii = true;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return text;
  if (text.length >= NATIVE_UTF8_MIN_CHARS) return Buffer.from(text, 'utf8').toString('latin1');
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    let code = text.charCodeAt(i);
    if (code >= 0xd800 && code <= 0xdfff) {
      const low = text.charCodeAt(i + 1);
      if (code <= 0xdbff && low >= 0xdc00 && low <= 0xdfff) {
        code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
        i++;
      } else {
        code = 0xfffd;
      }
    }
    if (code < 0x80) bytes.push(code);
    else if (code < 0x800) bytes.push(0xc0 | (code >> 6), 0x80 | (code & 0x3f));
    else if (code < 0x10000) bytes.push(0xe0 | (code >> 12), 0x80 | ((code >> 6) & 0x3f), 0x80 | (code & 0x3f));
    else {
      bytes.push(0xf0 | (code >> 18), 0x80 | ((code >> 12) & 0x3f), 0x80 | ((code >> 6) & 0x3f), 0x80 | (code & 0x3f));
    }
  }
  return String.fromCharCode(...bytes); // at most 4 × NATIVE_UTF8_MIN_CHARS arguments
}

/**
 * BPE as tiktoken defines it: repeatedly merge the adjacent pair of parts whose concatenation has
 * the lowest rank (the leftmost one on a tie) until no pair is in the vocabulary; the parts left
 * are the tokens. Every single byte is in the vocabulary, so parts never go unranked.
 */
// Scratch space for countPartsLinear, reused across calls (counting is synchronous).
const linearStarts = new Int32Array(LINEAR_MERGE_MAX_BYTES + 1);
const linearPairRanks = new Float64Array(LINEAR_MERGE_MAX_BYTES);

function countPartsLinear(bytes: string, ranks: Map<string, number>): number {
  // starts[i] is where part i begins, with starts[parts] = bytes.length;
  // pairRanks[i] ranks the concatenation of parts i and i+1.
  const starts = linearStarts;
  const pairRanks = linearPairRanks;
  let parts = bytes.length;
  for (let i = 0; i <= parts; i++) starts[i] = i;
  for (let i = 0; i < parts - 1; i++) pairRanks[i] = ranks.get(bytes.slice(i, i + 2)) ?? Infinity;

  while (parts > 1) {
    let lowest = Infinity;
    let at = -1;
    for (let i = 0; i < parts - 1; i++) {
      const rank = pairRanks[i] as number;
      if (rank < lowest) {
        lowest = rank;
        at = i;
      }
    }
    if (at < 0) break;
    // Merge part at+1 into part at: shift the later entries down by one.
    starts.copyWithin(at + 1, at + 2, parts + 1);
    pairRanks.copyWithin(at + 1, at + 2, parts - 1);
    parts--;
    if (at < parts - 1) {
      pairRanks[at] = ranks.get(bytes.slice(starts[at] as number, starts[at + 2] as number)) ?? Infinity;
    }
    if (at > 0) {
      pairRanks[at - 1] = ranks.get(bytes.slice(starts[at - 1] as number, starts[at + 1] as number)) ?? Infinity;
    }
  }
  return parts;
}

/**
 * The same merge order as countPartsLinear, with a min-heap of candidate pairs keyed by
 * (rank, start) so that long pieces cost O(n log n) instead of O(n²). Parts form a linked list over
 * byte offsets; heap entries made stale by a neighbour's merge are skipped when popped.
 */
function countPartsWithHeap(bytes: string, ranks: Map<string, number>): number {
  const length = bytes.length;
  const nextStart = new Int32Array(length); // start of the following part (length for the last)
  const previousStart = new Int32Array(length); // start of the preceding part (-1 for the first)
  const pairRank = new Float64Array(length); // rank of (this part + next part), Infinity if none
  const alive = new Uint8Array(length); // 1 while an offset starts a part
  const heap = new MinHeap();

  const rankOfPair = (start: number): number => {
    const second = nextStart[start] as number;
    if (second >= length) return Infinity;
    return ranks.get(bytes.slice(start, nextStart[second])) ?? Infinity;
  };
  const refresh = (start: number): void => {
    const rank = rankOfPair(start);
    pairRank[start] = rank;
    if (rank !== Infinity) heap.push(rank * START_BITS + start);
  };

  for (let i = 0; i < length; i++) {
    nextStart[i] = i + 1;
    previousStart[i] = i - 1;
    alive[i] = 1;
  }
  for (let i = 0; i < length; i++) refresh(i);

  let parts = length;
  while (heap.size > 0) {
    const key = heap.pop();
    const rank = Math.floor(key / START_BITS);
    const start = key - rank * START_BITS;
    if (alive[start] === 0 || pairRank[start] !== rank) continue; // stale
    const absorbed = nextStart[start] as number;
    const after = nextStart[absorbed] as number;
    alive[absorbed] = 0;
    nextStart[start] = after;
    if (after < length) previousStart[after] = start;
    parts--;
    refresh(start);
    const before = previousStart[start] as number;
    if (before >= 0) refresh(before);
  }
  return parts;
}

/** A binary min-heap of numbers. */
class MinHeap {
  readonly #items: number[] = [];

  get size(): number {
    return this.#items.length;
  }

  push(value: number): void {
    const items = this.#items;
    let index = items.length;
    items.push(value);
    while (index > 0) {
      const parent = (index - 1) >> 1;
      const parentValue = items[parent] as number;
      if (parentValue <= value) break;
      items[index] = parentValue;
      index = parent;
    }
    items[index] = value;
  }

  /** Removes and returns the smallest value; call only when size > 0. */
  pop(): number {
    const items = this.#items;
    const top = items[0] as number;
    const last = items.pop() as number;
    const size = items.length;
    if (size === 0) return top;
    let index = 0;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= size) break;
      const right = left + 1;
      const child = right < size && (items[right] as number) < (items[left] as number) ? right : left;
      const childValue = items[child] as number;
      if (childValue >= last) break;
      items[index] = childValue;
      index = child;
    }
    items[index] = last;
    return top;
  }
}
