/**
 * An SSE stream cut into whole events, whatever its chunking, on bytes: the usage stripper and the
 * id rewriter each see whole events only, so nothing they look for is ever cut in two. A chunk that
 * ends on an event's end (as Azure sends them) is handed on as it is, with no copy; only the bytes
 * after the last whole event wait for the next chunk.
 *
 * An event ends at a blank line: `\n\n`, `\r\n\r\n` or a mix; every such end is `\n` followed by
 * `\n` or `\r\n`. A whole event never ends inside a multi-byte character (its end is ASCII), so an
 * event is decoded, where it needs to be, without a decoder carrying bytes across chunks.
 */
const LF = 0x0a;
const CR = 0x0d;

export class SseEvents {
  private pending: Buffer | undefined;

  /** The chunk's whole events (with what was pending before them), or undefined when none ended in it. */
  take(chunk: Buffer): Buffer | undefined {
    const data = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    const cut = endOfLastEvent(data, this.pending ? this.pending.length : 0);
    if (cut === data.length) {
      this.pending = undefined;
      return data;
    }
    // Copied: a slice would keep the whole chunk alive for as long as the stream waits.
    this.pending = Buffer.from(data.subarray(cut));
    return cut === 0 ? undefined : data.subarray(0, cut);
  }

  /** Whatever followed the last whole event, once the stream ended. */
  rest(): Buffer | undefined {
    const rest = this.pending;
    this.pending = undefined;
    return rest;
  }
}

/**
 * Where the last event ending in `data` ends (0: none). Only ends whose last `\n` is at `from` or
 * later are looked for: the bytes before were pending, and no event had ended in them.
 */
function endOfLastEvent(data: Buffer, from: number): number {
  // As Azure sends them: the chunk ends on an event's end.
  const n = data.length;
  if (n >= 2 && data[n - 1] === LF && (data[n - 2] === LF || (data[n - 2] === CR && data[n - 3] === LF))) return n;
  for (let at = data.lastIndexOf(LF); at >= from && at > 0; at = data.lastIndexOf(LF, at - 1)) {
    if (data[at - 1] === LF) return at + 1;
    if (data[at - 1] === CR && at >= 2 && data[at - 2] === LF) return at + 1;
  }
  return 0;
}

/** Each whole event of `events` (as SseEvents.take returns them), with its end, as [start, end) offsets. */
export function* eventRanges(events: Buffer): Generator<[number, number]> {
  let start = 0;
  for (let at = events.indexOf(LF); at !== -1; at = events.indexOf(LF, at + 1)) {
    const next = events[at + 1];
    let end = -1;
    if (next === LF) end = at + 2;
    else if (next === CR && events[at + 2] === LF) end = at + 3;
    if (end === -1) continue;
    yield [start, end];
    start = end;
    at = end - 1;
  }
  if (start < events.length) yield [start, events.length];
}
