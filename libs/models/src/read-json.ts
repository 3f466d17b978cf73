import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { ModelFormatError } from "./errors.js";
import { LIMITS } from "./limits.js";

/**
 * Flags to open a file of a model folder for reading. Non-blocking, so that a named pipe in its
 * place fails the regular-file check at once instead of holding a thread until a writer comes.
 */
export const OPEN_FOR_READING = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0);

/**
 * Reads a JSON file of a model folder, at most `maxBytes` of it.
 * @throws ModelFormatError naming the file: missing, unreadable, not a regular file, larger than
 * `maxBytes`, not UTF-8 or not JSON. The message says where the JSON breaks, never what it holds:
 * the file may be a link to anything (/etc/passwd), and the message reaches the API's caller.
 */
export async function readJsonFile(file: string, maxBytes: number = LIMITS.jsonFileBytes): Promise<unknown> {
  return parseJson(file, await readBoundedFile(file, maxBytes));
}

/**
 * The bytes of a regular file of at most `maxBytes` bytes. The size is checked before reading,
 * and the read stops past `maxBytes` should the file grow meanwhile.
 * @throws ModelFormatError naming the file: missing, unreadable, not a regular file (a device such
 * as /dev/zero, a folder, a pipe), or too large.
 */
export async function readBoundedFile(file: string, maxBytes: number): Promise<Buffer> {
  const cannot = (err: unknown): never => {
    const code = (err as NodeJS.ErrnoException).code;
    const what = code === "ENOENT" ? "file is missing" : `cannot be read (${code ?? "unknown error"})`;
    throw new ModelFormatError(file, what, { cause: err });
  };
  const handle = await open(file, OPEN_FOR_READING).catch(cannot);
  try {
    const info = await handle.stat().catch(cannot);
    if (!info.isFile()) throw new ModelFormatError(file, "is not a regular file");
    if (info.size > maxBytes) throw new ModelFormatError(file, `is ${info.size} bytes; at most ${maxBytes} are read`);
    const out = Buffer.alloc(info.size);
    let done = 0;
    while (done < out.length) {
      const { bytesRead } = await handle.read(out, done, out.length - done, done).catch(cannot);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done === out.length ? out : out.subarray(0, done);
  } finally {
    await handle.close();
  }
}

/**
 * Parses UTF-8 JSON bytes of `file`. `lead` starts the message of a refusal; `baseOffset` is where
 * `bytes` start in the file, so the byte named is the file's.
 * @throws ModelFormatError `<lead> at line L column C (byte B)`, or `<lead>: not UTF-8 at byte B`.
 * V8's own message quotes the input (`Unexpected token 'r', "root:x:0:0:"... is not valid JSON`),
 * so it is never passed on; the position comes from {@link jsonErrorOffset} instead.
 */
export function parseJson(file: string, bytes: Uint8Array, lead = "invalid JSON", baseOffset = 0): unknown {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new ModelFormatError(file, `${lead}: not UTF-8 at byte ${baseOffset + invalidUtf8Offset(bytes)}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    const at = jsonErrorOffset(text);
    if (at < 0) throw new ModelFormatError(file, lead);
    let line = 1;
    let lineStart = 0;
    for (let i = 0; i < at; i++) {
      if (text.charCodeAt(i) === 0x0a) {
        line++;
        lineStart = i + 1;
      }
    }
    const byte = baseOffset + Buffer.byteLength(text.slice(0, at), "utf8");
    throw new ModelFormatError(file, `${lead} at line ${line} column ${at - lineStart + 1} (byte ${byte})`);
  }
}

/**
 * Index (in UTF-16 code units) of the first character where `text` stops being JSON (RFC 8259),
 * `text.length` when it ends too soon, or -1 when it is valid. Iterative, so nesting depth costs
 * no stack.
 */
export function jsonErrorOffset(text: string): number {
  const n = text.length;
  const stack: Array<"[" | "{"> = [];
  let i = 0;
  const skipSpace = (): void => {
    while (i < n && " \t\n\r".includes(text[i]!)) i++;
  };
  const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
  /** Moves past a string that starts at i; false (i at the fault) when it is malformed. */
  const string = (): boolean => {
    i++;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return true;
      }
      if (c < 0x20) return false;
      if (c === 0x5c) {
        const e = text[i + 1];
        const length = e === "u" ? 6 : 2;
        for (let k = 1; k < length; k++) {
          const ok = k === 1 ? e !== undefined && '"\\/bfnrtu'.includes(e) : /^[0-9a-fA-F]$/.test(text[i + k] ?? "");
          if (!ok) {
            i = Math.min(i + k, n);
            return false;
          }
        }
        i += length;
        continue;
      }
      i++;
    }
    return false;
  };
  const number = (): boolean => {
    if (text[i] === "-") i++;
    if (text[i] === "0") i++;
    else if (isDigit(text.charCodeAt(i))) while (isDigit(text.charCodeAt(i))) i++;
    else return false;
    if (text[i] === ".") {
      i++;
      if (!isDigit(text.charCodeAt(i))) return false;
      while (isDigit(text.charCodeAt(i))) i++;
    }
    if (text[i] === "e" || text[i] === "E") {
      i++;
      if (text[i] === "+" || text[i] === "-") i++;
      if (!isDigit(text.charCodeAt(i))) return false;
      while (isDigit(text.charCodeAt(i))) i++;
    }
    return true;
  };
  const literal = (word: string): boolean => {
    for (let k = 0; k < word.length; k++, i++) if (text[i] !== word[k]) return false;
    return true;
  };

  let state: "value" | "key" | "after" = "value";
  for (;;) {
    skipSpace();
    if (state === "value") {
      const c = text[i];
      if (c === "{" || c === "[") {
        stack.push(c);
        i++;
        skipSpace();
        if (text[i] === (c === "{" ? "}" : "]")) {
          stack.pop();
          i++;
          state = "after";
        } else state = c === "{" ? "key" : "value";
        continue;
      }
      const ok = c === '"' ? string() : c === "t" ? literal("true") : c === "f" ? literal("false") : c === "n" ? literal("null") : c === "-" || isDigit(text.charCodeAt(i)) ? number() : false;
      if (!ok) return Math.min(i, n);
      state = "after";
    } else if (state === "key") {
      if (text[i] !== '"' || !string()) return Math.min(i, n);
      skipSpace();
      if (text[i] !== ":") return Math.min(i, n);
      i++;
      state = "value";
    } else {
      const top = stack.at(-1);
      if (top === undefined) return i >= n ? -1 : i;
      const c = text[i];
      if (c === ",") {
        i++;
        state = top === "{" ? "key" : "value";
      } else if (c === (top === "{" ? "}" : "]")) {
        stack.pop();
        i++;
      } else return Math.min(i, n);
    }
  }
}

/** Offset of the first byte that does not start or continue a well-formed UTF-8 sequence. */
function invalidUtf8Offset(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    let extra: number;
    let min: number;
    if (b < 0x80) {
      i++;
      continue;
    } else if (b >= 0xc2 && b <= 0xdf) [extra, min] = [1, 0x80];
    else if (b >= 0xe0 && b <= 0xef) [extra, min] = [2, 0x800];
    else if (b >= 0xf0 && b <= 0xf4) [extra, min] = [3, 0x10000];
    else return i;
    let cp = b & (0x3f >> extra);
    for (let k = 1; k <= extra; k++) {
      const c = bytes[i + k];
      if (c === undefined || (c & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += extra + 1;
  }
  return bytes.length;
}

/**
 * A value of a field, for a message that says what was wrong with it: numbers, booleans and null
 * as written, strings of up to 40 characters quoted; longer strings, lists and objects only
 * described ("a string of 300 characters", "a list of 3 items"), so a message never carries much
 * of a file.
 */
export function shown(value: unknown): string {
  if (value === null || typeof value === "number" || typeof value === "boolean") return String(value);
  if (value === undefined) return "no value";
  if (typeof value === "string") return value.length <= 40 ? JSON.stringify(value) : `a string of ${value.length} characters`;
  if (Array.isArray(value)) return `a list of ${value.length} item${value.length === 1 ? "" : "s"}`;
  return typeof value === "object" ? "an object" : typeof value;
}

/**
 * What kind of error a library raised, without the part of its message that may quote its input:
 * the name and the message up to its first colon or quote ("SyntaxError: Unexpected character"
 * of "Unexpected character: r").
 */
export function errorKind(err: unknown): string {
  if (!(err instanceof Error)) return typeof err;
  const kind = (err.message.split(/[:'"`\n]/, 1)[0] ?? "").trim().slice(0, 80);
  return kind === "" ? err.name : `${err.name}: ${kind}`;
}

/** A plain JSON object, or null for anything else (arrays included). */
export function asObject(value: unknown): Record<string, unknown> | null {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}
