import { invalidArgument } from "./errors.js";

/**
 * The AIP-160 subset Lathe's List calls take: comparisons `field = value` or `field != value`
 * joined by AND, strings in double quotes (`\` escapes the next character), enum values as bare
 * words. Each service says which fields it takes and checks each value against its field's type.
 */

/** One comparison as written: the field, the operator, and its value quoted or bare. */
export interface RawFilterTerm {
  field: string;
  op: "=" | "!=";
  /** The value of a string in double quotes, unescaped; undefined for a bare word. */
  quoted: string | undefined;
  /** A bare word (an enum value name); undefined for a quoted string. */
  bare: string | undefined;
}

/** The longest filter read, in characters. */
export const FILTER_MAX_LENGTH = 2000;
/** The most comparisons one filter may join with AND. */
export const FILTER_MAX_TERMS = 20;

// Tab, newline and carriage return may separate terms; every other control character is refused.
// eslint-disable-next-line no-control-regex -- refusing control characters is the point
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/;
// One comparison: a field, `=` or `!=`, and a string in double quotes or a bare word (enum names).
const TERM = /\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[^\s=!"]*)?)\s*(!=|=)\s*(?:"((?:[^"\\\t\n\r]|\\[^\t\n\r])*)"|([A-Za-z0-9_]+))/y;
const AND = /\s+AND\s+/y;
const END = /\s*$/y;

/** An INVALID_ARGUMENT on `filter`. */
export const badFilter = (message: string) => invalidArgument("filter", message);
/** A value as a filter's error message quotes it (cut at 40 characters). */
export const quoteFilterValue = (s: string) => JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);

/**
 * The comparisons of a filter, in order, before any field is checked. An over-long filter, too
 * many terms, control characters or text that is not a comparison is INVALID_ARGUMENT on `filter`
 * saying what and where; an empty filter has none.
 */
export function readFilter(filter: string): RawFilterTerm[] {
  if (filter.length > FILTER_MAX_LENGTH) throw badFilter(`is ${filter.length} characters long; the limit is ${FILTER_MAX_LENGTH}`);
  const control = CONTROL.exec(filter);
  if (control) throw badFilter(`holds the control character U+${control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")} at offset ${control.index}`);
  if (filter.trim() === "") return [];
  const terms: RawFilterTerm[] = [];
  let at = 0;
  for (;;) {
    if (terms.length === FILTER_MAX_TERMS) throw badFilter(`has more than ${FILTER_MAX_TERMS} comparisons; the limit is ${FILTER_MAX_TERMS}`);
    TERM.lastIndex = at;
    const m = TERM.exec(filter);
    if (!m) throw badFilter(`cannot read ${quoteFilterValue(filter.slice(at).trim())} at offset ${at}: expected field = value or field != value (strings in double quotes), joined by AND`);
    terms.push({ field: m[1]!, op: m[2] as "=" | "!=", quoted: m[3]?.replace(/\\([\s\S])/g, "$1"), bare: m[4] });
    at = TERM.lastIndex;
    END.lastIndex = at;
    if (END.test(filter)) return terms;
    AND.lastIndex = at;
    if (!AND.test(filter)) throw badFilter(`expected AND or the end at offset ${at}, found ${quoteFilterValue(filter.slice(at).trim())}`);
    at = AND.lastIndex;
  }
}

const LABEL_KEY = /^[a-z][a-z0-9_-]{0,62}$/;

/** The label key and value of a `labels.<key> = "value"` term, checked. */
export function labelFilterTerm(t: RawFilterTerm): { label: string; value: string } {
  const label = t.field.slice("labels.".length);
  if (!LABEL_KEY.test(label)) throw badFilter(`${quoteFilterValue(label)} is not a label key (1 to 63 lowercase letters, digits, '-' or '_', starting with a letter)`);
  if (t.quoted === undefined) throw badFilter(`${t.field} takes a string in double quotes`);
  if (t.quoted.length > 63) throw badFilter(`labels.${label}: label values are at most 63 characters`);
  return { label, value: t.quoted };
}
