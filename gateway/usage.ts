/**
 * Token usage read from the tail of an upstream response as it streams past, without parsing it:
 * Azure writes `usage` last in a JSON body and in the last chunk before `[DONE]` of a stream.
 */
export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

const TAIL_BYTES = 4096;
const USAGE = /"usage"\s*:\s*\{([^{}]|\{[^{}]*\})*\}/g;

export class UsageTail {
  private tail: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): void {
    this.tail = chunk.length >= TAIL_BYTES ? chunk.subarray(chunk.length - TAIL_BYTES) : Buffer.concat([this.tail, chunk]).subarray(-TAIL_BYTES);
  }

  usage(): Usage | undefined {
    const matches = this.tail.toString('utf8').match(USAGE);
    const last = matches?.at(-1);
    if (!last) return undefined;
    const number = (name: string) => Number(new RegExp(`"${name}"\\s*:\\s*(\\d+)`).exec(last)?.[1] ?? NaN);
    const promptTokens = number('prompt_tokens');
    const totalTokens = number('total_tokens');
    if (!Number.isFinite(promptTokens) || !Number.isFinite(totalTokens)) return undefined;
    const completion = number('completion_tokens');
    return { promptTokens, totalTokens, completionTokens: Number.isFinite(completion) ? completion : totalTokens - promptTokens };
  }
}
