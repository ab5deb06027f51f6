/**
 * Splitting a byte stream into lines as it arrives, holding at most one line in memory.
 *
 * @module
 */
import { StringDecoder } from 'node:string_decoder';

/**
 * Longest line handed on; a longer one is skipped whole (it stays in the log).
 *
 * @example
 * ```ts
 * new LineSplitter(onLine, MAX_LINE_BYTES); // the default
 * ```
 */
export const MAX_LINE_BYTES = 8 * 1024 * 1024;

/**
 * Cuts chunks into lines (`\n`, with a trailing `\r` removed) and calls `onLine` for each; a line
 * longer than `maxLineBytes` is dropped rather than held, so memory stays bounded whatever the
 * CLI prints. Multi-byte characters split across chunks are decoded correctly.
 *
 * @example
 * ```ts
 * const lines = new LineSplitter((line) => console.log(line));
 * lines.push(Buffer.from('{"a":1}\n{"b"')); lines.push(Buffer.from(':2}\n')); lines.end();
 * ```
 */
export class LineSplitter {
  private parts: string[] = [];
  private size = 0;
  private overflow = false;
  private readonly decoder = new StringDecoder('utf8');

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly maxLineBytes = MAX_LINE_BYTES,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (let at = chunk.indexOf(0x0a); at !== -1; at = chunk.indexOf(0x0a, start)) {
      this.append(chunk.subarray(start, at));
      this.emit();
      start = at + 1;
    }
    if (start < chunk.length) this.append(chunk.subarray(start));
  }

  /** The stream ended: hands on the last line if it had no line break. */
  end(): void {
    if (this.size > 0 || this.overflow) this.emit();
    else this.decoder.end();
  }

  private append(bytes: Buffer): void {
    if (this.overflow) return;
    this.size += bytes.length;
    if (this.size > this.maxLineBytes) {
      this.overflow = true;
      this.parts = [];
      return;
    }
    this.parts.push(this.decoder.write(bytes));
  }

  private emit(): void {
    const rest = this.decoder.end(); // also resets it after an overflowed line
    const overflowed = this.overflow;
    let line = overflowed ? '' : this.parts.join('') + rest;
    this.parts = [];
    this.size = 0;
    this.overflow = false;
    if (overflowed) return;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    this.onLine(line);
  }
}
