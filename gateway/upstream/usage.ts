/**
 * Token usage read from the tail of an upstream response as it streams past, without parsing it:
 * Azure writes `usage` last in a JSON body and in the last chunk before `[DONE]` of a stream.
 */
export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Prompt tokens served from the prompt cache (a provisioned deployment does not count them). */
  cachedTokens?: number;
}

const TAIL_BYTES = 4096;
const USAGE = /"usage"\s*:\s*\{([^{}]|\{[^{}]*\})*\}/g;
const FIELDS = {
  prompt_tokens: /"prompt_tokens"\s*:\s*(\d+)/,
  completion_tokens: /"completion_tokens"\s*:\s*(\d+)/,
  total_tokens: /"total_tokens"\s*:\s*(\d+)/,
  cached_tokens: /"cached_tokens"\s*:\s*(\d+)/,
};

export class UsageTail {
  /** The most recent chunks, at least TAIL_BYTES of them once that much went by; joined only when read. */
  private chunks: Buffer[] = [];
  private size = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.chunks.length > 1 && this.size - this.chunks[0]!.length >= TAIL_BYTES) this.size -= this.chunks.shift()!.length;
  }

  private get tail(): Buffer {
    const joined = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    return joined.length > TAIL_BYTES ? joined.subarray(joined.length - TAIL_BYTES) : joined;
  }

  usage(): Usage | undefined {
    const matches = this.tail.toString('utf8').match(USAGE);
    const last = matches?.at(-1);
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
