/**
 * Token usage read from an upstream response as it streams past, without parsing it: Azure writes
 * `usage` last in a JSON body, and in the last chunk before `[DONE]` of a stream.
 *
 * Only what follows the latest `"usage"` key with a value other than `null` is kept (at most
 * TAIL_BYTES of it), found with a native search per chunk: a stream whose chunks each carry
 * `"usage":null` keeps nothing until its final usage chunk, where a tail of the last 4 KB kept a
 * dozen chunks alive per stream.
 */
export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Prompt tokens served from the prompt cache (a provisioned deployment does not count them). */
  cachedTokens?: number;
}

const TAIL_BYTES = 4096;
const USAGE_KEY = Buffer.from('"usage"');
/** The most of a key that can end a chunk without the whole of it. */
const KEY_HEAD_BYTES = USAGE_KEY.length - 1;
/** A usage object at the start of the text (one level of nesting: `prompt_tokens_details`). */
const USAGE_AT = /^"usage"\s*:\s*\{(?:[^{}]|\{[^{}]*\})*\}/;
const FIELDS = {
  prompt_tokens: /"prompt_tokens"\s*:\s*(\d+)/,
  completion_tokens: /"completion_tokens"\s*:\s*(\d+)/,
  total_tokens: /"total_tokens"\s*:\s*(\d+)/,
  cached_tokens: /"cached_tokens"\s*:\s*(\d+)/,
};

/** A chat completion's `usage` object (parsed JSON) in the gateway's terms; undefined when it is not one. */
export function chatUsageOf(usage: unknown): Usage | undefined {
  const fields = usage as {
    prompt_tokens?: unknown;
    completion_tokens?: unknown;
    total_tokens?: unknown;
    prompt_tokens_details?: unknown;
  } | null;
  if (typeof fields?.prompt_tokens !== 'number' || typeof fields.total_tokens !== 'number') return undefined;
  const { prompt_tokens: promptTokens, total_tokens: totalTokens } = fields;
  const cached = (fields.prompt_tokens_details as { cached_tokens?: unknown } | undefined)?.cached_tokens;
  return {
    promptTokens,
    totalTokens,
    completionTokens: typeof fields.completion_tokens === 'number' ? fields.completion_tokens : totalTokens - promptTokens,
    ...(typeof cached === 'number' ? { cachedTokens: cached } : {}),
  };
}

export class UsageTail {
  /** The chunks from the one where the latest usage key starts, up to TAIL_BYTES past it. */
  private chunks: Buffer[] = [];
  /** Where the key starts in chunks[0]; -1: no key seen yet. */
  private keyAt = -1;
  /** Bytes kept from the key on. */
  private size = 0;
  /** The latest bytes seen (at least KEY_HEAD_BYTES of them when that many came), for a key cut between chunks. */
  private edge: Buffer | undefined;

  push(chunk: Buffer): void {
    const at = lastUsageKey(chunk);
    if (at !== -1) this.keep([chunk], at, chunk.length - at);
    else {
      const split = this.edge ? splitKeyAt(this.edge, chunk) : -1;
      if (split !== -1) {
        const head = Buffer.from(this.edge!.subarray(split));
        this.keep([head, chunk], 0, head.length + chunk.length);
      } else if (this.keyAt !== -1 && this.size < TAIL_BYTES) {
        this.chunks.push(chunk);
        this.size += chunk.length;
      }
    }
    // Chunks this small are rare: only they cost a copy.
    const edge = this.edge;
    this.edge =
      chunk.length >= KEY_HEAD_BYTES || !edge ? chunk : Buffer.concat([edge.subarray(Math.max(0, edge.length - KEY_HEAD_BYTES)), chunk]);
  }

  /** Bytes kept for reading the usage (a bound on what a stream holds here). */
  get keptBytes(): number {
    return this.chunks.reduce((sum, chunk) => sum + chunk.length, 0);
  }

  private keep(chunks: Buffer[], keyAt: number, size: number): void {
    this.chunks = chunks;
    this.keyAt = keyAt;
    this.size = size;
  }

  usage(): Usage | undefined {
    if (this.keyAt === -1) return undefined;
    const joined = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    // latin1: the usage object is ASCII, and no decoder is needed for a cut character after it.
    const last = USAGE_AT.exec(joined.toString('latin1', this.keyAt))?.[0];
    if (!last) return undefined;
    const number = (name: keyof typeof FIELDS) => Number(FIELDS[name].exec(last)?.[1] ?? NaN);
    const promptTokens = number('prompt_tokens');
    const totalTokens = number('total_tokens');
    if (!Number.isFinite(promptTokens) || !Number.isFinite(totalTokens)) return undefined;
    const completion = number('completion_tokens');
    const cached = number('cached_tokens');
    return {
      promptTokens,
      totalTokens,
      completionTokens: Number.isFinite(completion) ? completion : totalTokens - promptTokens,
      ...(Number.isFinite(cached) ? { cachedTokens: cached } : {}),
    };
  }
}

/** `null` after the key's colon: a stream chunk's `"usage":null`, which never replaces a usage kept. */
const NULL_VALUE = Buffer.from(':null');

/** Where the last usage key not followed by `:null` starts in the chunk, or -1. */
function lastUsageKey(chunk: Buffer): number {
  for (let at = chunk.lastIndexOf(USAGE_KEY); at !== -1; at = at === 0 ? -1 : chunk.lastIndexOf(USAGE_KEY, at - 1)) {
    if (!startsWith(chunk, at + USAGE_KEY.length, NULL_VALUE)) return at;
  }
  return -1;
}

/** Where in `edge` (the bytes before `chunk`) a usage key starts that ends in `chunk`, or -1. */
function splitKeyAt(edge: Buffer, chunk: Buffer): number {
  for (let head = 1; head <= KEY_HEAD_BYTES; head++) {
    const start = edge.length - head;
    if (start < 0) break;
    const tail = USAGE_KEY.length - head;
    if (chunk.length < tail || !keyPartAt(edge, start, 0, head) || !keyPartAt(chunk, 0, head, USAGE_KEY.length)) continue;
    return startsWith(chunk, tail, NULL_VALUE) ? -1 : start;
  }
  return -1;
}

/** True when `bytes` holds the key's bytes [from, to) at `at` (no view made: this runs on every chunk). */
function keyPartAt(bytes: Buffer, at: number, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (bytes[at + i - from] !== USAGE_KEY[i]) return false;
  return true;
}

/** True when `bytes` holds `prefix` at `at` (false when it ends before). */
function startsWith(bytes: Buffer, at: number, prefix: Buffer): boolean {
  if (at + prefix.length > bytes.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[at + i] !== prefix[i]) return false;
  return true;
}
