/**
 * When a streaming client did not ask for usage, the gateway asks upstream for it
 * (`stream_options.include_usage`) so accounting stays exact, and this takes the extra back out:
 * the final `choices: []` usage chunk is dropped (its usage kept for the gateway) and the
 * `"usage":null` field every other chunk then carries is removed. The client receives what it asked for.
 *
 * On bytes, in place: a chunk is searched (natively) for `"usage"`, and each `"usage":null` is cut out
 * by moving the few bytes after it back, so a chunk costs no decode, no encode and no copy. Text the
 * model wrote cannot look like the field: a quote inside a JSON string is escaped.
 */
import { SseEvents, eventRanges } from './sse-events.ts';
import { chatUsageOf, type Usage } from './usage.ts';

const USAGE_KEY = Buffer.from('"usage":');
const NO_CHOICES = Buffer.from('"choices":[]');
const NULL = Buffer.from('null');
const COMMA = 0x2c;
const OPEN_BRACE = 0x7b;

export class UsageStripper {
  usage: Usage | undefined;
  private readonly events = new SseEvents();

  /**
   * What to send of this chunk now (its whole events, stripped), or undefined: nothing yet. The
   * chunk's own memory is changed: what is sent is a (shorter) view of it.
   */
  take(chunk: Buffer): Buffer | undefined {
    let view = this.events.take(chunk);
    if (!view) return undefined;
    for (let at = view.indexOf(USAGE_KEY); at !== -1; at = view.indexOf(USAGE_KEY, at)) {
      const value = at + USAGE_KEY.length;
      const cut = view[value] === OPEN_BRACE ? this.usageChunkAround(view, at) : nullFieldAt(view, at, value);
      if (!cut) {
        at = value;
        continue;
      }
      // The bytes after the cut move back over it; the view ends where they now end.
      const [from, to] = cut;
      view.copyWithin(from, to);
      view = view.subarray(0, view.length - (to - from));
      at = from;
    }
    return view;
  }

  /** Whatever followed the last whole event, as it came. */
  end(): Buffer | undefined {
    return this.events.rest();
  }

  /** The event around `at` when it is the usage chunk (its usage is kept); undefined for one that only looks like it. */
  private usageChunkAround(events: Buffer, at: number): [number, number] | undefined {
    for (const [start, end] of eventRanges(events)) {
      if (at < start || at >= end) continue;
      const event = events.subarray(start, end);
      return event.indexOf(NO_CHOICES) !== -1 && this.read(event) ? [start, end] : undefined;
    }
    return undefined;
  }

  /** True when the event is the usage chunk: its usage is kept. */
  private read(event: Buffer): boolean {
    const text = event.toString('utf8');
    try {
      const usage = chatUsageOf((JSON.parse(text.slice(text.indexOf('{'))) as { usage?: unknown }).usage);
      if (usage) {
        this.usage = usage;
        return true;
      }
    } catch {
      // Not the usage chunk after all: pass it on as it came.
    }
    return false;
  }
}

/** The bytes of `,"usage":null` (or `"usage":null,`) at `at`, its value at `value`; undefined when it is not that. */
function nullFieldAt(events: Buffer, at: number, value: number): [number, number] | undefined {
  for (let i = 0; i < NULL.length; i++) if (events[value + i] !== NULL[i]) return undefined;
  const end = value + NULL.length;
  if (at > 0 && events[at - 1] === COMMA) return [at - 1, end];
  if (events[end] === COMMA) return [at, end + 1];
  return undefined;
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
