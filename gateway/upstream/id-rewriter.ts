/**
 * Responses and conversations answers on their way to the client: every id of stored state the
 * resource issued is handed out carrying the resource's tag (resource-ids.ts), in a JSON body and
 * in each event of a stream alike, and the usage is read (from the body, or from the stream's
 * `response.completed`). A stream passes event by event: each is sent as soon as it is whole.
 *
 * Ids are found as JSON fields (`"id":"msg_…"`, `"item_id"`, `"previous_response_id"`, …) in the
 * text as it came: a quote inside a string value is escaped, so text the model wrote that looks
 * like such a field is never matched.
 */
import { decodeOpaque, encodeId, encodeOpaque, ID_FIELDS, isUpstreamId } from '../resource-ids.ts';
import { SseEvents, eventRanges } from './sse-events.ts';
import type { Usage } from './usage.ts';

const ID_FIELD = new RegExp(`"(${ID_FIELDS.join('|')})"(\\s*:\\s*)"([a-z]{1,32}_[A-Za-z0-9]{1,200})"`, 'g');
const ENCRYPTED_CONTENT = /"encrypted_content"(\s*:\s*)"((?:[^"\\]|\\.)+)"/g;
/** Events that carry the finished response and its usage. */
const FINAL_EVENTS = ['"response.completed"', '"response.incomplete"', '"response.failed"'];

/** The text with each upstream id at an id field, and each reasoning item's encrypted content, carrying the tag. */
export function withTaggedIds(text: string, tag: string): string {
  const tagged = text.replace(ID_FIELD, (whole, field: string, colon: string, id: string) =>
    isUpstreamId(id) ? `"${field}"${colon}"${encodeId(id, tag)}"` : whole,
  );
  if (!tagged.includes('"encrypted_content"')) return tagged;
  return tagged.replace(ENCRYPTED_CONTENT, (whole, colon: string, content: string) =>
    decodeOpaque(content) ? whole : `"encrypted_content"${colon}"${encodeOpaque(content, tag)}"`,
  );
}

/** An error body quoting ids the client sent restored: it gets the ids it sent back. */
export function withClientIds(body: Buffer, restored: ReadonlyMap<string, string>): Buffer {
  return restored.size === 0 ? body : Buffer.from(clientIdsIn(body.toString('utf8'), restored));
}

function clientIdsIn(text: string, restored: ReadonlyMap<string, string>): string {
  for (const [upstream, client] of restored) text = text.split(upstream).join(client);
  return text;
}

export class IdRewriter {
  usage: Usage | undefined;
  private readonly tag: string;
  private readonly restored: ReadonlyMap<string, string>;
  private readonly readsUsage: boolean;
  /** A stream's events; undefined for a JSON body, which is kept whole until its end. */
  private readonly events: SseEvents | undefined;
  private readonly body: Buffer[] = [];

  /**
   * `stream`: an SSE stream, rewritten event by event; otherwise a JSON body, rewritten whole at its
   * end. `readsUsage`: the call ran the model (a create); a retrieved response's usage was paid for already.
   */
  constructor(tag: string, stream: boolean, restored: ReadonlyMap<string, string>, readsUsage: boolean) {
    this.tag = tag;
    this.restored = restored;
    this.readsUsage = readsUsage;
    this.events = stream ? new SseEvents() : undefined;
  }

  /** What to send of this chunk now: a stream's whole events, rewritten; nothing of a JSON body before its end. */
  take(chunk: Buffer): Buffer | undefined {
    if (!this.events) {
      this.body.push(chunk);
      return undefined;
    }
    const events = this.events.take(chunk);
    if (!events) return undefined;
    let out = '';
    for (const [start, end] of eventRanges(events)) {
      const event = events.toString('utf8', start, end);
      if (this.readsUsage) this.readStreamUsage(event);
      out += withTaggedIds(event, this.tag);
    }
    return Buffer.from(out);
  }

  /** The rest: a stream's unfinished last event, or the whole JSON body, rewritten. */
  end(): Buffer | undefined {
    if (this.events) {
      const rest = this.events.rest();
      return rest && Buffer.from(withTaggedIds(rest.toString('utf8'), this.tag));
    }
    const text = Buffer.concat(this.body).toString('utf8');
    if (!text) return undefined;
    if (this.readsUsage) this.usage = usageOf(parsed(text));
    return Buffer.from(clientIdsIn(withTaggedIds(text, this.tag), this.restored));
  }

  private readStreamUsage(event: string): void {
    if (!FINAL_EVENTS.some((type) => event.includes(type))) return;
    const data = event.slice(event.indexOf('{'));
    const response = (parsed(data) as { response?: unknown } | undefined)?.response;
    this.usage = usageOf(response) ?? this.usage;
  }
}

function parsed(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A Responses usage (`input_tokens`, `output_tokens`) in the gateway's terms. */
function usageOf(response: unknown): Usage | undefined {
  const usage = (response as { usage?: Record<string, unknown> } | undefined)?.usage;
  if (!usage || typeof usage.input_tokens !== 'number' || typeof usage.output_tokens !== 'number') return undefined;
  const details = usage.input_tokens_details as { cached_tokens?: unknown } | undefined;
  const cached = typeof details?.cached_tokens === 'number' ? details.cached_tokens : undefined;
  const total = typeof usage.total_tokens === 'number' ? usage.total_tokens : usage.input_tokens + usage.output_tokens;
  return { promptTokens: usage.input_tokens, completionTokens: usage.output_tokens, totalTokens: total, cachedTokens: cached };
}
