/**
 * When a streaming client did not ask for usage, the gateway asks upstream for it
 * (`stream_options.include_usage`) so accounting stays exact, and this transform takes the extra
 * back out: the final `choices: []` usage chunk is dropped (its usage kept for the gateway) and the
 * `"usage":null` field every other chunk then carries is removed. The client receives what it asked for.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { SseEvents } from './sse-events.ts';
import type { Usage } from './usage.ts';

export class UsageStripper extends Transform {
  usage: Usage | undefined;
  private readonly events = new SseEvents();

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const out = this.events.take(chunk, (event, separator) => this.rewrite(event, separator));
    if (out) this.push(out);
    callback();
  }

  override _flush(callback: TransformCallback): void {
    const rest = this.events.rest();
    if (rest) this.push(rest);
    callback();
  }

  private rewrite(event: string, separator: string): string {
    if (!event.includes('"usage"')) return event + separator;
    if (event.includes('"usage":{') && event.includes('"choices":[]')) {
      const data = event.slice(event.indexOf('{'));
      try {
        const usage = (JSON.parse(data) as { usage?: Record<string, number> }).usage;
        if (usage && typeof usage.prompt_tokens === 'number' && typeof usage.total_tokens === 'number') {
          this.usage = {
            promptTokens: usage.prompt_tokens,
            completionTokens: usage.completion_tokens ?? usage.total_tokens - usage.prompt_tokens,
            totalTokens: usage.total_tokens,
          };
          return '';
        }
      } catch {
        // Not the usage chunk after all: pass it on as it came.
      }
      return event + separator;
    }
    return event.replace(',"usage":null', '').replace('"usage":null,', '') + separator;
  }
}

/** api-versions from which Azure accepts `stream_options` (2024-09-01-preview and later, v1's `preview`/`latest`). */
export function acceptsStreamOptions(apiVersion: string): boolean {
  return apiVersion >= '2024-09-01' || apiVersion === 'preview' || apiVersion === 'latest';
}

/** The body with `stream_options.include_usage` switched on, or undefined when nothing needs changing. */
export function withUsageRequested(body: Record<string, unknown>): Buffer | undefined {
  if (body.stream !== true) return undefined;
  const options = body.stream_options;
  if (options && typeof options === 'object' && (options as Record<string, unknown>).include_usage === true) return undefined;
  const merged = { ...(options && typeof options === 'object' ? options : {}), include_usage: true };
  return Buffer.from(JSON.stringify({ ...body, stream_options: merged }));
}
