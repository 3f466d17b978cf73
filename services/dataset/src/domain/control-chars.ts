import { invalidArgument } from "@lathe/kit";

/**
 * Characters no stored text may hold, wherever it comes from (a row's turns, a version's
 * description or labels, check options):
 *
 * - NUL (U+0000): Postgres stores it in neither text nor jsonb, so a row holding it could not be
 *   kept at all;
 * - the other C0 controls except tab, line feed and carriage return (U+0001–U+0008, U+000B,
 *   U+000C, U+000E–U+001F): invisible, almost always left over from a broken extraction, and each
 *   tokenizer and chat template treats them differently;
 * - a lone surrogate (U+D800–U+DFFF without its other half, as a `\ud800` escape in JSON): not a
 *   character; it has no UTF-8 form and jsonb refuses it.
 *
 * Tab, line feed and carriage return are ordinary text. DEL and the C1 controls (U+007F–U+009F)
 * are stored as they are: Postgres keeps them, and mis-decoded Windows-1252 text is full of them.
 */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const forbidden = /[\u0000-\u0008\u000B\u000C\u000E-\u001F]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const forbiddenAll = new RegExp(forbidden.source, "g");

/** `text` with each forbidden character replaced by U+FFFD: for text we write ourselves from a row, such as a JSON error that quotes it. */
export function withoutForbiddenChars(text: string): string {
  return text.replace(forbiddenAll, "\uFFFD");
}

/** The first forbidden character of `text`: its code point and its 1-based position in characters (code points). */
export function findForbiddenChar(text: string): { codePoint: number; character: number } | undefined {
  const m = forbidden.exec(text);
  if (!m) return undefined;
  return { codePoint: m[0].charCodeAt(0), character: [...text.slice(0, m.index)].length + 1 };
}

/** `what` (a field path, "the line", or "" for none) followed by what is wrong with it and what to do, or undefined when the text is clean. */
export function forbiddenCharProblem(what: string, text: string): string | undefined {
  const found = findForbiddenChar(text);
  if (!found) return undefined;
  const code = `U+${found.codePoint.toString(16).toUpperCase().padStart(4, "0")}`;
  const subject = what === "" ? "" : `${what} `;
  return found.codePoint >= 0xd800
    ? `${subject}contains a lone surrogate ${code} at character ${found.character}; remove it or fix the text's encoding`
    : `${subject}contains ${code} at character ${found.character}; remove control characters`;
}

/** `value` of a request field, refused (INVALID_ARGUMENT on `field`) when it holds a forbidden character. */
export function checkCleanText(field: string, value: string): string {
  const bad = forbiddenCharProblem("", value);
  if (bad) throw invalidArgument(field, bad);
  return value;
}

/** Labels whose values hold no forbidden character (keys are checked by the kit's label rules). */
export function checkCleanLabels(field: string, labels: Record<string, string>): Record<string, string> {
  for (const [k, v] of Object.entries(labels)) checkCleanText(`${field}.${k}`, v);
  return labels;
}
