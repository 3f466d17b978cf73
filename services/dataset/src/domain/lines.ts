/** One line of an uploaded file: its 1-based number and its bytes, or how long it was when over the limit. */
export type Line = { number: number; bytes: Buffer; overLimit: false } | { number: number; bytes: null; overLimit: true; length: number };

/**
 * Splits a stream of byte chunks into lines (`\n`, an optional `\r` before it dropped) without
 * holding more than one line in memory. A line longer than `maxLineBytes` is not buffered: its
 * bytes are counted and dropped, and it comes out as `overLimit`, so a 50 MB line costs nothing.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private length = 0;
  private number = 0;
  private over = false;

  constructor(private readonly maxLineBytes: number) {}

  /** The complete lines in `chunk` (and before it). */
  push(chunk: Buffer): Line[] {
    const out: Line[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl === -1) {
        this.append(chunk.subarray(start));
        return out;
      }
      this.append(chunk.subarray(start, nl));
      out.push(this.take());
      start = nl + 1;
    }
  }

  /** The last line when the file does not end with a line break. */
  end(): Line | undefined {
    if (this.length === 0 && !this.over) return undefined;
    return this.take();
  }

  private append(part: Buffer): void {
    if (part.length === 0) return;
    this.length += part.length;
    if (this.over) return;
    if (this.length > this.maxLineBytes + 1) {
      // +1 leaves room for a trailing \r that is not part of the line.
      this.over = true;
      this.parts = [];
      return;
    }
    this.parts.push(part);
  }

  private take(): Line {
    this.number++;
    let line: Line;
    if (this.over) {
      line = { number: this.number, bytes: null, overLimit: true, length: this.length };
    } else {
      let bytes = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.length);
      if (bytes.length > 0 && bytes[bytes.length - 1] === 0x0d) bytes = bytes.subarray(0, bytes.length - 1);
      line = bytes.length > this.maxLineBytes ? { number: this.number, bytes: null, overLimit: true, length: bytes.length } : { number: this.number, bytes: Buffer.from(bytes), overLimit: false };
    }
    this.parts = [];
    this.length = 0;
    this.over = false;
    return line;
  }
}
