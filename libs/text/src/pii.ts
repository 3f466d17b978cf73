// PII and secret detection over free text, for the dataset checks and the redacting derivation.
//
// Training data is full of numbers (dates, versions, prices, ids), so every detector is written
// for precision: a match must have the full structure of the thing (separators, ranges, lengths)
// and, where one exists, a valid checksum (Luhn, IBAN mod-97). Each detector runs only when its
// trigger character is in the text, uses regexes compiled once, with bounded quantifiers and no
// nested ambiguity, so a pathological line cannot make a scan super-linear.

import { cardNetwork, ibanLength, ibanValid, luhnValid } from "./pii-checksums.js";

export { ibanValid, luhnValid } from "./pii-checksums.js";

/** A kind of personal data or secret; mirrors `lathe.type.v1.PiiKind`. */
export type PiiKind = "email" | "phone" | "card_number" | "national_id" | "iban" | "ip_address" | "api_key";

/** Every kind, in the order of the proto enum. */
export const allPiiKinds: readonly PiiKind[] = Object.freeze([
  "email",
  "phone",
  "card_number",
  "national_id",
  "ip_address",
  "api_key",
  "iban",
] as const);

/** One finding in a text. */
export interface PiiHit {
  kind: PiiKind;
  /** UTF-16 offset of the first character. */
  start: number;
  /** UTF-16 offset just past the last character. */
  end: number;
  /**
   * What matched, more precisely than `kind`: "email"; "e164", "nanp"; a card network ("visa",
   * "mastercard", "amex", "discover", "jcb", "diners", "unionpay", "maestro", "mir"); "us_ssn";
   * "iban"; "ipv4", "ipv6"; a key type ("aws_access_key", "github_token", "github_pat",
   * "slack_token", "stripe_key", "openai_key", "anthropic_key", "google_api_key",
   * "huggingface_token", "gitlab_token", "npm_token", "jwt", "pem_private_key").
   */
  detail: string;
}

const placeholders: Readonly<Record<PiiKind, string>> = {
  email: "[EMAIL]",
  phone: "[PHONE]",
  card_number: "[CARD_NUMBER]",
  national_id: "[NATIONAL_ID]",
  iban: "[IBAN]",
  ip_address: "[IP_ADDRESS]",
  api_key: "[API_KEY]",
};

/** Which kind wins when two hits of the same length overlap: the most specific (lowest) first. */
const specificity: Readonly<Record<PiiKind, number>> = {
  api_key: 0,
  card_number: 1,
  iban: 2,
  national_id: 3,
  email: 4,
  ip_address: 5,
  phone: 6,
};

/**
 * Finds the PII in `text`: every hit with its UTF-16 span (end exclusive), sorted by start and
 * non-overlapping. Where two candidates overlap the longer one wins, and at equal length the
 * more specific kind (API key, card, IBAN, national id, email, IP address, phone, in that order).
 * `kinds` limits the scan to those kinds; by default every kind is looked for.
 */
export function scanPii(text: string, kinds?: ReadonlySet<PiiKind>): PiiHit[] {
  if (text.length === 0) return [];
  const want = (kind: PiiKind): boolean => kinds === undefined || kinds.has(kind);
  const hits: PiiHit[] = [];
  if (want("email") && text.includes("@")) scanEmails(text, hits);
  if (want("api_key")) {
    scanApiKeys(text, hits);
    if (text.includes("-----BEGIN ")) scanPrivateKeys(text, hits);
  }
  // Every remaining detector needs at least one digit (IPv6 addresses without a digit, like
  // "::" or "a::b", are deliberately not reported: in text they are code, not addresses).
  if (!/\d/.test(text)) return resolveOverlaps(hits);
  if (want("phone")) {
    if (text.includes("+")) scanE164(text, hits);
    scanNanp(text, hits);
  }
  if (want("card_number")) scanCards(text, hits);
  if (want("national_id")) scanSsns(text, hits);
  if (want("iban")) scanIbans(text, hits);
  if (want("ip_address")) {
    if (text.includes(".")) scanIpv4(text, hits);
    if (text.includes(":")) scanIpv6(text, hits);
  }
  return resolveOverlaps(hits);
}

/**
 * Replaces each hit in `text` by its kind's placeholder ([EMAIL], [PHONE], [CARD_NUMBER],
 * [NATIONAL_ID], [IBAN], [IP_ADDRESS], [API_KEY]). `hits` defaults to `scanPii(text)`; hits
 * from elsewhere may come in any order, and overlapping ones collapse into the first
 * placeholder. Throws a RangeError when a hit lies outside `text`.
 */
export function redactPii(text: string, hits?: readonly PiiHit[]): string {
  const ordered = hits === undefined ? scanPii(text) : [...hits].sort((a, b) => a.start - b.start || b.end - a.end);
  let out = "";
  let cursor = 0;
  for (const hit of ordered) {
    if (!(hit.start >= 0 && hit.start <= hit.end && hit.end <= text.length)) {
      throw new RangeError(`PII hit [${hit.start}, ${hit.end}) lies outside the text of length ${text.length}`);
    }
    if (hit.start < cursor) {
      cursor = Math.max(cursor, hit.end);
      continue;
    }
    out += text.slice(cursor, hit.start) + placeholders[hit.kind];
    cursor = hit.end;
  }
  return out + text.slice(cursor);
}

/** Keeps, of overlapping hits, the longer one (then the more specific); sorts by start. */
function resolveOverlaps(hits: PiiHit[]): PiiHit[] {
  if (hits.length < 2) return hits;
  hits.sort((a, b) => a.start - b.start || b.end - a.end);
  const kept: PiiHit[] = [];
  for (const hit of hits) {
    const last = kept[kept.length - 1];
    if (last === undefined || hit.start >= last.end) {
      kept.push(hit);
    } else if (better(hit, last)) {
      // `hit` starts at or after `last`, and whatever was kept before `last` ends by then, so
      // swapping them cannot make `hit` overlap an earlier hit.
      kept[kept.length - 1] = hit;
    }
  }
  return kept;
}

function better(a: PiiHit, b: PiiHit): boolean {
  const la = a.end - a.start;
  const lb = b.end - b.start;
  return la !== lb ? la > lb : specificity[a.kind] < specificity[b.kind];
}

// ---------------------------------------------------------------------------------------------
// Character classes, by code unit.

const Ch = {
  LineFeed: 10,
  CarriageReturn: 13,
  Space: 32,
  OpenParen: 40,
  CloseParen: 41,
  Plus: 43,
  Hyphen: 45,
  Dot: 46,
  Slash: 47,
  Zero: 48,
  Colon: 58,
  Underscore: 95,
} as const;

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

function isAlnum(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

function isLetter(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

/** Whether a number ends at `end`: no letter or digit follows, nor a '.' or '-' and a digit. */
function numberEndsAt(text: string, end: number): boolean {
  const c = text.charCodeAt(end);
  if (isAlnum(c) || c === Ch.Underscore) return false;
  return !((c === Ch.Dot || c === Ch.Hyphen) && isDigit(text.charCodeAt(end + 1)));
}

// ---------------------------------------------------------------------------------------------
// Email: local@domain.tld. Found from each '@' outwards, so text without '@' costs one indexOf.

const maxLocal = 64;
const maxDomain = 253;

/** Characters of an unquoted local part, the common subset of RFC 5322's dot-atom. */
function isLocalChar(c: number): boolean {
  return isAlnum(c) || c === Ch.Dot || c === Ch.Underscore || c === 37 /* % */ || c === Ch.Plus || c === Ch.Hyphen;
}

function isDomainChar(c: number): boolean {
  return isAlnum(c) || c === Ch.Dot || c === Ch.Hyphen;
}

/** "icon@2x.png" is a file name, not an address: no TLD is an image extension. */
const fileExtensions = new Set(["png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "avif"]);

function scanEmails(text: string, out: PiiHit[]): void {
  for (let at = text.indexOf("@"); at !== -1; at = text.indexOf("@", at + 1)) {
    let start = at;
    while (start > 0 && at - start <= maxLocal && isLocalChar(text.charCodeAt(start - 1))) start--;
    if (at - start > maxLocal) continue;
    while (start < at && text.charCodeAt(start) === Ch.Dot) start++;
    if (start === at || text.charCodeAt(at - 1) === Ch.Dot) continue;

    let end = at + 1;
    while (end < text.length && end - at - 1 <= maxDomain && isDomainChar(text.charCodeAt(end))) end++;
    if (end - at - 1 > maxDomain) continue;
    // A sentence may end right after the address: "write to a@b.com."
    while (end > at + 1 && (text.charCodeAt(end - 1) === Ch.Dot || text.charCodeAt(end - 1) === Ch.Hyphen)) end--;

    const local = text.slice(start, at);
    if (local.includes("..")) continue;
    if (!validDomain(text.slice(at + 1, end))) continue;
    out.push({ kind: "email", start, end, detail: "email" });
  }
}

function validDomain(domain: string): boolean {
  const labels = domain.split(".");
  if (labels.length < 2) return false;
  for (const label of labels) {
    if (label.length === 0 || label.length > 63) return false;
    if (label.charCodeAt(0) === Ch.Hyphen || label.charCodeAt(label.length - 1) === Ch.Hyphen) return false;
  }
  const tld = labels[labels.length - 1] ?? "";
  if (tld.length < 2) return false;
  for (let i = 0; i < tld.length; i++) if (!isLetter(tld.charCodeAt(i))) return false;
  return !fileExtensions.has(tld.toLowerCase());
}

// ---------------------------------------------------------------------------------------------
// API keys and tokens with a provider prefix: one regex, one alternative (and group) per shape.

const apiKeyShapes = [
  ["aws_access_key", "A(?:KIA|SIA)[A-Z0-9]{16}"],
  ["github_token", "gh[pousr]_[A-Za-z0-9]{36,251}"],
  ["github_pat", "github_pat_[A-Za-z0-9_]{22,244}"],
  ["slack_token", "xox[abprs]-[A-Za-z0-9-]{10,250}"],
  ["stripe_key", "(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}"],
  ["anthropic_key", "sk-ant-[A-Za-z0-9_-]{20,250}"],
  ["openai_key", "sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,250}|[A-Za-z0-9]{20,250})"],
  ["google_api_key", "AIza[A-Za-z0-9_-]{35}"],
  ["huggingface_token", "hf_[A-Za-z0-9]{30,250}"],
  ["gitlab_token", "glpat-[A-Za-z0-9_-]{20,250}"],
  ["npm_token", "npm_[A-Za-z0-9]{36}"],
  // header.payload.signature, base64url; the header is JSON, so it starts with '{"' = "eyJ".
  ["jwt", "eyJ[A-Za-z0-9_-]{8,4096}\\.[A-Za-z0-9_-]{2,16384}\\.[A-Za-z0-9_-]{0,4096}"],
] as const;

const keyAlternatives = apiKeyShapes.map(([, source]) => `(${source})`).join("|");

/** A key at a known start (sticky). */
const apiKeyAtRe = new RegExp(`(?:${keyAlternatives})(?![A-Za-z0-9_-])`, "y");

/**
 * Keys whose prefix starts with a fixed capitalised literal: one regex finds them quickly. The
 * other shapes all have a '_' or '-' within their first seven characters, and are looked for
 * only where one of those characters is (an alternation over all shapes at every position of
 * the text is several times slower).
 */
const literalKeyRe = /A(?:KIA|SIA|Iza)|eyJ/g; // no lookaround: it would defeat the fast scan

/** The words, with their separator, that open a key of the other shapes. */
const keyPrefixes = new Set([
  "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_", "xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-",
  "sk_", "rk_", "sk-", "hf_", "glpat-", "npm_",
]);
const longestKeyPrefixWord = 6; // "github"

/** Key types whose random part always has a digit in practice; without one it is a word. */
const needsDigit = new Set<string>(["openai_key", "anthropic_key", "slack_token", "gitlab_token"]);

function scanApiKeys(text: string, out: PiiHit[]): void {
  literalKeyRe.lastIndex = 0;
  for (let m = literalKeyRe.exec(text); m !== null; m = literalKeyRe.exec(text)) {
    if (m.index > 0 && isAlnum(text.charCodeAt(m.index - 1))) continue;
    const end = matchKeyAt(text, m.index, out);
    literalKeyRe.lastIndex = Math.max(end, m.index + 1);
  }
  for (const sep of ["_", "-"]) {
    let from = 0;
    for (let p = text.indexOf(sep); p !== -1; p = text.indexOf(sep, from)) {
      from = p + 1;
      let start = p;
      while (start > 0 && p - start < longestKeyPrefixWord && isAlnum(text.charCodeAt(start - 1))) start--;
      if (p - start < 2 || (start > 0 && isAlnum(text.charCodeAt(start - 1)))) continue;
      if (!keyPrefixes.has(text.slice(start, p + 1))) continue;
      from = Math.max(from, matchKeyAt(text, start, out));
    }
  }
}

/** Records the key that starts at `start`, if one does; returns where it ends (or `start`). */
function matchKeyAt(text: string, start: number, out: PiiHit[]): number {
  apiKeyAtRe.lastIndex = start;
  const m = apiKeyAtRe.exec(text);
  if (m === null) return start;
  const group = m.findIndex((g, i) => i > 0 && g !== undefined);
  const detail = apiKeyShapes[group - 1]?.[0];
  if (detail === undefined || (needsDigit.has(detail) && !/\d/.test(m[0]))) return start;
  const end = start + m[0].length;
  out.push({ kind: "api_key", start, end, detail });
  return end;
}

// PEM private keys: the whole block from BEGIN to the matching END is one hit. A block cut off
// before its END (a truncated paste) still covers the base64 lines that follow the BEGIN line.

const pemBeginRe = /-----BEGIN ((?:[A-Z0-9]{1,16} ){0,3})PRIVATE KEY( BLOCK)?-----/g;
const maxPemLength = 64 * 1024;

function scanPrivateKeys(text: string, out: PiiHit[]): void {
  // Where each END marker next occurs, so that many BEGINs without an END (a text that repeats
  // the header) cost one search per marker, not one per BEGIN over the rest of the text.
  const nextEnd = new Map<string, number>();
  pemBeginRe.lastIndex = 0;
  for (let m = pemBeginRe.exec(text); m !== null; m = pemBeginRe.exec(text)) {
    const start = m.index;
    const bodyStart = start + m[0].length;
    const endMarker = `-----END ${m[1] ?? ""}PRIVATE KEY${m[2] ?? ""}-----`;
    let endAt = nextEnd.get(endMarker);
    if (endAt === undefined || (endAt !== -1 && endAt < bodyStart)) {
      endAt = text.indexOf(endMarker, bodyStart);
      nextEnd.set(endMarker, endAt);
    }
    let end: number;
    if (endAt !== -1 && endAt - start <= maxPemLength) {
      end = endAt + endMarker.length;
    } else {
      end = bodyStart;
      for (let line = nextLine(text, end); line !== undefined && line.end - start <= maxPemLength; line = nextLine(text, end)) {
        if (!/^[A-Za-z0-9+/=]+\r?$/.test(text.slice(line.start, line.end))) break;
        end = line.end;
      }
      while (end > bodyStart && text.charCodeAt(end - 1) === Ch.CarriageReturn) end--;
    }
    out.push({ kind: "api_key", start, end, detail: "pem_private_key" });
    pemBeginRe.lastIndex = end;
  }
}

/** The line after the one that ends at `end` (which must be at a line break), if any. */
function nextLine(text: string, end: number): { start: number; end: number } | undefined {
  if (text.charCodeAt(end) === Ch.CarriageReturn) end++;
  if (text.charCodeAt(end) !== Ch.LineFeed) return undefined;
  const start = end + 1;
  const next = text.indexOf("\n", start);
  return { start, end: next === -1 ? text.length : next };
}

// ---------------------------------------------------------------------------------------------
// Phone numbers.

// E.164: '+', then digit groups separated by single spaces, dots or hyphens, or in parentheses
// ("+44 (0) 20 7946 0958"). Each group is a whole digit run (the `(?!\d)`), so the groups cannot
// be split two ways and backtracking stays linear.
const e164Re = /(?<![\w+])\+\d{1,15}(?!\d)(?:[ .-]?\(\d{1,6}\)|[ .-]?\d{1,15}(?!\d)){0,8}/g;

interface DigitGroup {
  digits: string;
  /** The separator before the group: "", " ", ".", "-", or "(" for a parenthesised group. */
  sep: string;
  /** Offset just past the group, in the text. */
  end: number;
}

/** Splits a match of digits, separators and parentheses into its digit groups. */
function digitGroups(match: string, offset: number): DigitGroup[] {
  const groups: DigitGroup[] = [];
  let sep = "";
  let i = 0;
  while (i < match.length) {
    const c = match.charCodeAt(i);
    if (isDigit(c)) {
      let j = i + 1;
      while (j < match.length && isDigit(match.charCodeAt(j))) j++;
      const digits = match.slice(i, j);
      if (sep === "(" && match.charCodeAt(j) === Ch.CloseParen) j++;
      groups.push({ digits, sep, end: offset + j });
      sep = "";
      i = j;
    } else {
      if (c !== Ch.Plus) sep = c === Ch.OpenParen ? "(" : (match[i] ?? "");
      i++;
    }
  }
  return groups;
}

function scanE164(text: string, out: PiiHit[]): void {
  e164Re.lastIndex = 0;
  for (let m = e164Re.exec(text); m !== null; m = e164Re.exec(text)) {
    const groups = digitGroups(m[0], m.index);
    // The longest run of groups that is a phone number: "+1 415 555 2671 10 times" is one.
    for (let k = groups.length; k >= 1; k--) {
      const prefix = groups.slice(0, k);
      const end = prefix[k - 1]?.end ?? m.index;
      if (validE164(prefix) && numberEndsAt(text, end)) {
        out.push({ kind: "phone", start: m.index, end, detail: "e164" });
        break;
      }
    }
  }
}

function validE164(groups: readonly DigitGroup[]): boolean {
  const digits = groups.map((g) => g.digits).join("");
  if (digits.length < 8 || digits.length > 15 || digits.startsWith("0")) return false;
  // Country code 1 is the North American plan: exactly ten more digits, area code not 0 or 1.
  if (digits.startsWith("1") && (digits.length !== 11 || digits.charCodeAt(1) < 50)) return false;
  // "+3.14159265" is a signed decimal, not a number written with dots; nor is "+3.14 555 12".
  const seps = new Set(groups.map((g) => g.sep));
  if (seps.has(".") && (groups.length === 2 || seps.has(" ") || seps.has("-"))) return false;
  // At most one one-digit group after the country code: "+44 (0) 20…" or "+33 1 23 45 67 89",
  // but not "+1 2 3 4 5 6 7 8".
  let short = 0;
  for (let i = 1; i < groups.length; i++) if (groups[i]?.digits.length === 1) short++;
  return short <= 1;
}

// North American numbers without '+': (555) 123-4567, 555-123-4567, 555.123.4567, with an
// optional leading "1-". Bare groups need '-' or '.' used consistently; "555 123 4567" with
// spaces alone is too often just three numbers in a row.
const nanpRe = /(?<![\w.+-])(?:1[ .-])?(?:\([2-9]\d\d\) ?|[2-9]\d\d([.-]))\d{3}([ .-])\d{4}(?!\d)/g;

function scanNanp(text: string, out: PiiHit[]): void {
  nanpRe.lastIndex = 0;
  for (let m = nanpRe.exec(text); m !== null; m = nanpRe.exec(text)) {
    const bareSep = m[1];
    if (bareSep !== undefined && m[2] !== bareSep) continue;
    const end = m.index + m[0].length;
    if (!numberEndsAt(text, end)) continue;
    out.push({ kind: "phone", start: m.index, end, detail: "nanp" });
  }
}

// ---------------------------------------------------------------------------------------------
// Payment cards: 13 to 19 digits, optionally in groups split by single spaces or hyphens.

// Every grouping starts with four digits. The boundary check comes after the first digit so
// that the engine can skip ahead to digits (twice as fast as a leading lookbehind).
const cardRe = /\d(?<![\w.,+-]\d)\d{3}(?:[ -]?\d){9,18}/g;

function scanCards(text: string, out: PiiHit[]): void {
  cardRe.lastIndex = 0;
  for (let m = cardRe.exec(text); m !== null; m = cardRe.exec(text)) {
    const groups = digitGroups(m[0], m.index);
    let digits = groups.reduce((n, g) => n + g.digits.length, 0);
    // Longest first: "4111 1111 1111 1111 12/25" is a card followed by its expiry.
    for (let k = groups.length; k >= 1 && digits >= 13; digits -= groups[--k]?.digits.length ?? 0) {
      if (digits > 19) continue;
      const prefix = groups.slice(0, k);
      const end = prefix[k - 1]?.end ?? m.index;
      const detail = cardDetail(prefix);
      if (detail !== undefined && numberEndsAt(text, end)) {
        out.push({ kind: "card_number", start: m.index, end, detail });
        break;
      }
    }
  }
}

/** The card network when `groups` are a card number grouped as cards are printed. */
function cardDetail(groups: readonly DigitGroup[]): string | undefined {
  const digits = groups.map((g) => g.digits).join("");
  if (digits.length < 13 || digits.length > 19) return undefined;
  if (groups.length > 1 && !cardGrouping(groups)) return undefined;
  return luhnValid(digits) ? cardNetwork(digits) : undefined;
}

/** 4-4-4-4 (last group shorter allowed), Amex 4-6-5 or Diners 4-6-4, one separator throughout. */
function cardGrouping(groups: readonly DigitGroup[]): boolean {
  const sep = groups[1]?.sep;
  if (groups.some((g, i) => i > 0 && g.sep !== sep)) return false;
  const sizes = groups.map((g) => g.digits.length);
  if (sizes.length === 3 && sizes[0] === 4 && sizes[1] === 6 && (sizes[2] === 5 || sizes[2] === 4)) return true;
  const last = sizes[sizes.length - 1] ?? 0;
  return sizes.every((s, i) => i === sizes.length - 1 || s === 4) && last >= 1 && last <= 4;
}

// ---------------------------------------------------------------------------------------------
// US Social Security numbers: ddd-dd-dddd (or spaced), outside the ranges never issued.

const ssnRe = /(?<![\w.-])(\d{3})([ -])(\d{2})\2(\d{4})(?!\d)/g;

function scanSsns(text: string, out: PiiHit[]): void {
  ssnRe.lastIndex = 0;
  for (let m = ssnRe.exec(text); m !== null; m = ssnRe.exec(text)) {
    const area = Number(m[1]);
    if (area === 0 || area === 666 || area >= 900 || m[3] === "00" || m[4] === "0000") continue;
    const end = m.index + m[0].length;
    if (!numberEndsAt(text, end)) continue;
    out.push({ kind: "national_id", start: m.index, end, detail: "us_ssn" });
  }
}

// ---------------------------------------------------------------------------------------------
// IBAN: country code, check digits, then the BBAN to the country's length, either unbroken or
// in groups of four separated by single spaces. The regex only finds where one may start.

const ibanStartRe = /(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?=[ ]?[A-Z0-9])/g;

function scanIbans(text: string, out: PiiHit[]): void {
  ibanStartRe.lastIndex = 0;
  for (let m = ibanStartRe.exec(text); m !== null; m = ibanStartRe.exec(text)) {
    const start = m.index;
    const length = ibanLength(text.slice(start, start + 2));
    if (length === undefined) continue;
    const spaced = text.charCodeAt(start + 4) === Ch.Space;
    let compact = text.slice(start, start + 4);
    let i = start + 4;
    while (compact.length < length) {
      if (spaced && compact.length % 4 === 0) {
        if (text.charCodeAt(i) !== Ch.Space) break;
        i++;
      }
      const c = text.charCodeAt(i);
      if (!(isDigit(c) || (c >= 65 && c <= 90))) break;
      compact += text[i];
      i++;
    }
    if (compact.length !== length || isAlnum(text.charCodeAt(i)) || !ibanValid(compact)) continue;
    out.push({ kind: "iban", start, end: i, detail: "iban" });
    ibanStartRe.lastIndex = i;
  }
}

// ---------------------------------------------------------------------------------------------
// IP addresses.

// A dotted quad that is not part of a longer dotted or alphanumeric token (1.2.3.4.5, v1.2.3.4).
const ipv4Re = /(?<![\w.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?!\w|\.\d)/g;

/** 0–255 written without leading zeros (a leading zero reads as octal to many parsers). */
function validOctet(s: string | undefined): boolean {
  if (s === undefined || s.length === 0) return false;
  if (s.length > 1 && s.charCodeAt(0) === Ch.Zero) return false;
  return Number(s) <= 255;
}

function validIpv4(s: string): boolean {
  const parts = s.split(".");
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && validOctet(p));
}

function scanIpv4(text: string, out: PiiHit[]): void {
  ipv4Re.lastIndex = 0;
  for (let m = ipv4Re.exec(text); m !== null; m = ipv4Re.exec(text)) {
    const octets = [m[1], m[2], m[3], m[4]];
    if (!octets.every(validOctet)) continue;
    const end = m.index + m[0].length;
    if (octets.every((o) => Number(o) < 32) && !addressContext(text, m.index, end)) continue;
    out.push({ kind: "ip_address", start: m.index, end, detail: "ipv4" });
  }
}

// Section and step numbers of specs and code comments ("section 8.1.2.2", "// 4.2.6.1") and
// four-part versions are dotted quads too, and they are made of small numbers. A quad whose
// octets are all below 32 (10.0.0.1, 8.8.8.8) therefore counts only with something around it
// that says "address": a word like "host" or "IP" just before, "://" or "@" right before, or
// a port or prefix length right after. Real client addresses nearly always have a larger octet.
const addressWordBeforeRe =
  /(?:\b(?:ips?|ipv4|hosts?|hostname|addr|address(?:es)?|servers?|dns|gateway|subnet|netmask|ping|proxy|router|inet|nameserver|peer|remote|localhost)\b[^.\n]{0,12}|:\/\/|@)$/i;

function addressContext(text: string, start: number, end: number): boolean {
  const after = text.charCodeAt(end);
  if ((after === Ch.Colon || after === Ch.Slash) && isDigit(text.charCodeAt(end + 1))) return true;
  return addressWordBeforeRe.test(text.slice(Math.max(0, start - 24), start));
}

// IPv6: found from each ':' outwards over the run of hex digits, colons and dots (for an
// embedded IPv4 tail) around it, then checked strictly. Times (12:30, 12:30:45) and MAC
// addresses have too few groups and no "::", so they fail the check.

function isIpv6Char(c: number): boolean {
  return (c >= 48 && c <= 58) /* 0-9 : */ || c === Ch.Dot || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
}

function isWordChar(c: number): boolean {
  return isAlnum(c) || c === Ch.Underscore;
}

function scanIpv6(text: string, out: PiiHit[]): void {
  let from = 0;
  for (let colon = text.indexOf(":"); colon !== -1; colon = text.indexOf(":", from)) {
    let colons = 1;
    let gap = false; // a "::"
    let start = colon;
    for (let c = text.charCodeAt(start - 1); start > 0 && isIpv6Char(c); c = text.charCodeAt(--start - 1)) {
      if (c === Ch.Colon) {
        colons++;
        gap ||= text.charCodeAt(start) === Ch.Colon;
      }
    }
    let end = colon + 1;
    for (let c = text.charCodeAt(end); end < text.length && isIpv6Char(c); c = text.charCodeAt(++end)) {
      if (c === Ch.Colon) {
        colons++;
        gap ||= text.charCodeAt(end - 1) === Ch.Colon;
      }
    }
    from = end;
    // Eight groups, or fewer around one "::"; times like 12:30:45 stop here.
    if (colons > 7 + (gap ? 1 : 0) || (!gap && colons !== 7)) continue;
    // Part of a longer token ("std::vector", "0x1f:2:3…"), or longer than any address.
    if (isWordChar(text.charCodeAt(start - 1)) || isWordChar(text.charCodeAt(end))) continue;
    while (end > colon && text.charCodeAt(end - 1) === Ch.Dot) end--;
    if (end - start > 45) continue;
    const candidate = text.slice(start, end);
    if (!/\d/.test(candidate) || !validIpv6(candidate)) continue;
    out.push({ kind: "ip_address", start, end, detail: "ipv6" });
  }
}

const hexGroupRe = /^[0-9A-Fa-f]{1,4}$/;

function validIpv6(s: string): boolean {
  let body = s;
  if (s.includes(".")) {
    const lastColon = s.lastIndexOf(":");
    if (!validIpv4(s.slice(lastColon + 1))) return false;
    body = `${s.slice(0, lastColon + 1)}0:0`; // the IPv4 tail stands for two groups
  }
  const gap = body.indexOf("::");
  if (gap === -1) {
    const parts = body.split(":");
    return parts.length === 8 && parts.every((p) => hexGroupRe.test(p));
  }
  if (body.indexOf("::", gap + 1) !== -1) return false;
  const head = body.slice(0, gap);
  const tail = body.slice(gap + 2);
  const parts = [...(head === "" ? [] : head.split(":")), ...(tail === "" ? [] : tail.split(":"))];
  // One short group around "::" ("::8", "1::") is more often notation (Vim's "::8") than an
  // address; the loopback "::1" and prefixes like "fe80::" stay.
  if (parts.length === 1 && s !== "::1" && (parts[0]?.length ?? 0) < 3) return false;
  return parts.length <= 7 && parts.every((p) => hexGroupRe.test(p));
}
