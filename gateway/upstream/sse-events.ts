/**
 * An SSE stream cut into whole events, whatever its chunking: the usage stripper and the id
 * rewriter each rewrite an event at a time and pass it on as soon as it is whole.
 */
import { StringDecoder } from 'node:string_decoder';

const EVENT_END = /\r?\n\r?\n/;

export class SseEvents {
  private pending = '';
  /** A chunk may end inside a multi-byte character: the decoder holds its first bytes for the next. */
  private readonly decoder = new StringDecoder('utf8');

  /** The chunk's whole events, each as `rewrite` returns it (given the event and its separator), joined. */
  take(chunk: Buffer, rewrite: (event: string, separator: string) => string): string {
    this.pending += this.decoder.write(chunk);
    let out = '';
    for (let match = EVENT_END.exec(this.pending); match; match = EVENT_END.exec(this.pending)) {
      out += rewrite(this.pending.slice(0, match.index), match[0]);
      this.pending = this.pending.slice(match.index + match[0].length);
    }
    return out;
  }

  /** Whatever followed the last whole event, once the stream ended. */
  rest(): string {
    const rest = this.pending + this.decoder.end();
    this.pending = '';
    return rest;
  }
}
