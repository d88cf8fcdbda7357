/**
 * Cuts an upload into its lines as the chunks arrive, keeping each line's offset and length in the
 * file (the line index the lane reads lines by). A line longer than `maxLineBytes` is not kept whole:
 * it is reported with its length only, so one endless line cannot make the gateway buffer the upload.
 */

export interface JsonlLine {
  /** 1-based, as editors number lines. */
  number: number;
  /** Byte offset of the line in the file. */
  offset: number;
  /** Bytes of the line, without its `\n`. */
  length: number;
  /** The line's bytes; undefined when it is longer than the limit. */
  bytes: Buffer | undefined;
}

const NEWLINE = 0x0a;

export class JsonlSplitter {
  readonly #maxLineBytes: number;
  #number = 0;
  /** Bytes of the file seen before the current chunk. */
  #seen = 0;
  #lineStart = 0;
  #parts: Buffer[] = [];
  #partLength = 0;

  constructor(maxLineBytes: number) {
    this.#maxLineBytes = maxLineBytes;
  }

  /** The lines this chunk completes. */
  push(chunk: Buffer): JsonlLine[] {
    const lines: JsonlLine[] = [];
    let start = 0;
    for (let newline = chunk.indexOf(NEWLINE); newline !== -1; newline = chunk.indexOf(NEWLINE, start)) {
      this.#append(chunk.subarray(start, newline));
      lines.push(this.#finish());
      start = newline + 1;
      this.#lineStart = this.#seen + start;
    }
    this.#append(chunk.subarray(start));
    this.#seen += chunk.length;
    return lines;
  }

  /** The last line, when the file does not end with a newline. */
  end(): JsonlLine[] {
    return this.#partLength > 0 ? [this.#finish()] : [];
  }

  /** Bytes of the file seen so far. */
  get bytes(): number {
    return this.#seen;
  }

  #append(part: Buffer): void {
    if (part.length === 0) return;
    this.#partLength += part.length;
    // Past the limit the line is only measured: its bytes are dropped as they come.
    if (this.#partLength > this.#maxLineBytes) this.#parts = [];
    else this.#parts.push(part);
  }

  #finish(): JsonlLine {
    const length = this.#partLength;
    const bytes = length > this.#maxLineBytes ? undefined : this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts, length);
    this.#number += 1;
    this.#parts = [];
    this.#partLength = 0;
    return { number: this.#number, offset: this.#lineStart, length, bytes };
  }
}
