/**
 * A small TOML reader, enough for the Rust Tinytown's `tinytown.toml` (written by the `toml`
 * crate's `to_string_pretty`, or edited by hand): tables, arrays of tables, bare, quoted and
 * dotted keys, basic and literal strings (single- and multi-line), integers, floats, booleans,
 * dates and times (kept as their text), arrays and inline tables, comments. It only reads.
 *
 * @module
 */

/** A TOML value; dates and times stay strings. */
export type TomlValue = string | number | boolean | TomlValue[] | TomlTable;

/** A TOML table. */
export interface TomlTable {
  [key: string]: TomlValue;
}

/** A syntax error, with the 1-based line it was found on. */
export class TomlSyntaxError extends Error {
  constructor(
    message: string,
    readonly line: number,
  ) {
    super(`${message} (line ${line})`);
    this.name = 'TomlSyntaxError';
  }
}

const BARE_KEY = /[A-Za-z0-9_-]/;
const DATE_TIME =
  /^(\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})?)?|\d{2}:\d{2}(:\d{2}(\.\d+)?)?)/;
const NUMBER = /^[+-]?(0x[0-9A-Fa-f_]+|0o[0-7_]+|0b[01_]+|inf|nan|\d[\d_]*(\.\d[\d_]*)?([eE][+-]?\d[\d_]*)?)/;
const ESCAPES: Record<string, string> = { b: '\b', t: '\t', n: '\n', f: '\f', r: '\r', e: '\x1b', '"': '"', '\\': '\\' };

/** Parses TOML text into plain objects. */
export function parseToml(text: string): TomlTable {
  return new Parser(text.replace(/^\uFEFF/, '')).document();
}

class Parser {
  private i = 0;
  /** Tables opened by a `[header]` or given a value directly: a second definition is an error. */
  private readonly closed = new WeakSet<object>();

  constructor(private readonly s: string) {}

  document(): TomlTable {
    const root: TomlTable = {};
    let current = root;
    for (;;) {
      this.blankLines();
      if (this.i >= this.s.length) return root;
      if (this.s[this.i] === '[') {
        const array = this.s[this.i + 1] === '[';
        this.i += array ? 2 : 1;
        const path = this.keyPath();
        this.expect(array ? ']]' : ']');
        current = array ? this.arrayTable(root, path) : this.table(root, path);
      } else {
        const path = this.keyPath();
        this.expect('=');
        this.spaces();
        this.assign(current, path, this.value());
      }
      this.lineEnd();
    }
  }

  // ── structure ───────────────────────────────────────────────────────────────────────────

  private table(root: TomlTable, path: string[]): TomlTable {
    const parent = this.walk(root, path.slice(0, -1));
    const last = path[path.length - 1]!;
    const existing = parent[last];
    if (existing === undefined) {
      const table: TomlTable = {};
      parent[last] = table;
      this.closed.add(table);
      return table;
    }
    if (!isTable(existing) || this.closed.has(existing)) this.fail(`table [${path.join('.')}] defined twice`);
    this.closed.add(existing);
    return existing;
  }

  private arrayTable(root: TomlTable, path: string[]): TomlTable {
    const parent = this.walk(root, path.slice(0, -1));
    const last = path[path.length - 1]!;
    const existing = parent[last] ?? [];
    if (!Array.isArray(existing)) this.fail(`[[${path.join('.')}]] is not an array of tables`);
    const table: TomlTable = {};
    existing.push(table);
    parent[last] = existing;
    return table;
  }

  /** The table at `path` under `from`, creating missing ones (the last of an array of tables). */
  private walk(from: TomlTable, path: string[]): TomlTable {
    let table = from;
    for (const key of path) {
      let next = table[key];
      if (next === undefined) {
        next = {};
        table[key] = next;
      }
      if (Array.isArray(next)) next = next[next.length - 1];
      if (!isTable(next)) this.fail(`key ${key} is not a table`);
      table = next;
    }
    return table;
  }

  private assign(table: TomlTable, path: string[], value: TomlValue): void {
    const parent = this.walk(table, path.slice(0, -1));
    const last = path[path.length - 1]!;
    if (parent[last] !== undefined) this.fail(`key ${path.join('.')} defined twice`);
    if (isTable(value)) this.closed.add(value);
    parent[last] = value;
  }

  // ── keys ────────────────────────────────────────────────────────────────────────────────

  private keyPath(): string[] {
    const path: string[] = [];
    for (;;) {
      this.spaces();
      path.push(this.key());
      this.spaces();
      if (this.s[this.i] !== '.') return path;
      this.i++;
    }
  }

  private key(): string {
    const c = this.s[this.i];
    if (c === '"') return this.basicString();
    if (c === "'") return this.literalString();
    const start = this.i;
    while (this.i < this.s.length && BARE_KEY.test(this.s[this.i]!)) this.i++;
    if (this.i === start) this.fail(`expected a key, found ${this.describe()}`);
    return this.s.slice(start, this.i);
  }

  // ── values ──────────────────────────────────────────────────────────────────────────────

  private value(): TomlValue {
    const rest = this.s.slice(this.i, this.i + 3);
    if (rest === '"""') return this.multilineBasic();
    if (rest === "'''") return this.multilineLiteral();
    const c = this.s[this.i];
    if (c === '"') return this.basicString();
    if (c === "'") return this.literalString();
    if (c === '[') return this.array();
    if (c === '{') return this.inlineTable();
    if (this.s.startsWith('true', this.i) && !BARE_KEY.test(this.s[this.i + 4] ?? '')) {
      this.i += 4;
      return true;
    }
    if (this.s.startsWith('false', this.i) && !BARE_KEY.test(this.s[this.i + 5] ?? '')) {
      this.i += 5;
      return false;
    }
    const tail = this.s.slice(this.i, this.i + 64);
    const date = DATE_TIME.exec(tail);
    if (date && date[0].length >= 5 && !/^\d+$/.test(date[0])) {
      this.i += date[0].trimEnd().length;
      return date[0].trimEnd();
    }
    const number = NUMBER.exec(tail);
    if (number) {
      this.i += number[0].length;
      return toNumber(number[0]);
    }
    return this.fail(`expected a value, found ${this.describe()}`);
  }

  private array(): TomlValue[] {
    this.i++; // [
    const items: TomlValue[] = [];
    for (;;) {
      this.blankLines();
      if (this.s[this.i] === ']') break;
      items.push(this.value());
      this.blankLines();
      if (this.s[this.i] === ',') {
        this.i++;
        continue;
      }
      if (this.s[this.i] !== ']') this.fail(`expected , or ] in an array, found ${this.describe()}`);
      break;
    }
    this.i++; // ]
    return items;
  }

  private inlineTable(): TomlTable {
    this.i++; // {
    const table: TomlTable = {};
    this.spaces();
    if (this.s[this.i] === '}') {
      this.i++;
      return table;
    }
    for (;;) {
      const path = this.keyPath();
      this.expect('=');
      this.spaces();
      this.assign(table, path, this.value());
      this.spaces();
      if (this.s[this.i] === ',') {
        this.i++;
        continue;
      }
      this.expect('}');
      return table;
    }
  }

  private basicString(): string {
    this.i++; // "
    let out = '';
    for (;;) {
      const c = this.s[this.i];
      if (c === undefined || c === '\n') this.fail('unterminated string');
      this.i++;
      if (c === '"') return out;
      out += c === '\\' ? this.escape() : c;
    }
  }

  private multilineBasic(): string {
    this.i += 3;
    if (this.s[this.i] === '\n') this.i++;
    else if (this.s.startsWith('\r\n', this.i)) this.i += 2;
    let out = '';
    for (;;) {
      if (this.i >= this.s.length) this.fail('unterminated multi-line string');
      if (this.s.startsWith('"""', this.i)) {
        // up to two quotes may end the content: `""""` is a quote, then the delimiter
        let end = this.i + 3;
        while (this.s[end] === '"' && end < this.i + 5) end++;
        out += '"'.repeat(end - this.i - 3);
        this.i = end;
        return out;
      }
      const c = this.s[this.i++]!;
      if (c !== '\\') {
        out += c;
        continue;
      }
      if (/^[ \t]*\r?\n/.test(this.s.slice(this.i, this.i + 64))) {
        // a line-ending backslash drops the newline and the whitespace after it
        while (/[ \t\r\n]/.test(this.s[this.i] ?? '')) this.i++;
        continue;
      }
      out += this.escape();
    }
  }

  private literalString(): string {
    this.i++; // '
    const end = this.s.indexOf("'", this.i);
    const newline = this.s.indexOf('\n', this.i);
    if (end === -1 || (newline !== -1 && newline < end)) this.fail('unterminated literal string');
    const out = this.s.slice(this.i, end);
    this.i = end + 1;
    return out;
  }

  private multilineLiteral(): string {
    this.i += 3;
    if (this.s[this.i] === '\n') this.i++;
    else if (this.s.startsWith('\r\n', this.i)) this.i += 2;
    const end = this.s.indexOf("'''", this.i);
    if (end === -1) this.fail('unterminated multi-line literal string');
    let close = end + 3;
    while (this.s[close] === "'" && close < end + 5) close++;
    const out = this.s.slice(this.i, close - 3);
    this.i = close;
    return out;
  }

  /** After a backslash in a basic string. */
  private escape(): string {
    const c = this.s[this.i++];
    if (c !== undefined && ESCAPES[c] !== undefined) return ESCAPES[c];
    if (c === 'u' || c === 'U') {
      const length = c === 'u' ? 4 : 8;
      const hex = this.s.slice(this.i, this.i + length);
      if (!new RegExp(`^[0-9A-Fa-f]{${length}}$`).test(hex)) this.fail(`bad \\${c} escape`);
      this.i += length;
      const code = parseInt(hex, 16);
      if (code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) this.fail(`bad \\${c} escape`);
      return String.fromCodePoint(code);
    }
    return this.fail(`unknown escape \\${c ?? ''}`);
  }

  // ── whitespace ──────────────────────────────────────────────────────────────────────────

  private spaces(): void {
    while (this.s[this.i] === ' ' || this.s[this.i] === '\t') this.i++;
  }

  /** Whitespace, newlines and comments. */
  private blankLines(): void {
    for (;;) {
      const c = this.s[this.i];
      if (c === ' ' || c === '\t' || c === '\r' || c === '\n') this.i++;
      else if (c === '#') this.comment();
      else return;
    }
  }

  private comment(): void {
    while (this.i < this.s.length && this.s[this.i] !== '\n') this.i++;
  }

  /** Spaces, an optional comment, then a newline or the end. */
  private lineEnd(): void {
    this.spaces();
    if (this.s[this.i] === '#') this.comment();
    if (this.s.startsWith('\r\n', this.i)) this.i += 2;
    else if (this.s[this.i] === '\n') this.i++;
    else if (this.i < this.s.length) this.fail(`expected the end of the line, found ${this.describe()}`);
  }

  private expect(token: string): void {
    this.spaces();
    if (!this.s.startsWith(token, this.i)) this.fail(`expected ${token}, found ${this.describe()}`);
    this.i += token.length;
  }

  private describe(): string {
    const c = this.s[this.i];
    return c === undefined ? 'the end of the file' : c === '\n' ? 'the end of the line' : JSON.stringify(c);
  }

  private fail(message: string): never {
    let line = 1;
    for (let j = 0; j < this.i && j < this.s.length; j++) if (this.s[j] === '\n') line++;
    throw new TomlSyntaxError(message, line);
  }
}

function isTable(value: unknown): value is TomlTable {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function toNumber(token: string): number {
  const sign = token.startsWith('-') ? -1 : 1;
  const body = token.replace(/^[+-]/, '').replace(/_/g, '');
  if (body === 'inf') return sign * Infinity;
  if (body === 'nan') return NaN;
  if (/^0x/.test(body)) return sign * parseInt(body.slice(2), 16);
  if (/^0o/.test(body)) return sign * parseInt(body.slice(2), 8);
  if (/^0b/.test(body)) return sign * parseInt(body.slice(2), 2);
  return sign * Number(body);
}
