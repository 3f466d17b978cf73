// Check digits and issuer tables behind the card and IBAN detectors: a number only counts as a
// card or an IBAN when its structure and checksum hold, which is what keeps the many long numbers
// of training data (order ids, timestamps, references) from being flagged.

/**
 * Whether `digits` passes the Luhn (mod 10) check used by payment card numbers.
 * `digits` must be ASCII digits only, at least two of them; anything else is not valid.
 */
export function luhnValid(digits: string): boolean {
  const n = digits.length;
  if (n < 2) return false;
  let sum = 0;
  let double = false;
  for (let i = n - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return false;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

/**
 * IBAN length per country, from the SWIFT IBAN registry (ISO 13616): the countries that issue
 * IBANs, plus the registry's "partial" countries that use the same structure.
 */
const ibanLengths: ReadonlyMap<string, number> = new Map(
  Object.entries({
    AD: 24, AE: 23, AL: 28, AO: 25, AT: 20, AZ: 28, BA: 20, BE: 16, BF: 28, BG: 22, BH: 22, BI: 27,
    BJ: 28, BR: 29, BY: 28, CF: 27, CG: 27, CH: 21, CI: 28, CM: 27, CR: 22, CV: 25, CY: 28, CZ: 24,
    DE: 22, DJ: 27, DK: 18, DO: 28, DZ: 26, EE: 20, EG: 29, ES: 24, FI: 18, FK: 18, FO: 18, FR: 27,
    GA: 27, GB: 22, GE: 22, GI: 23, GL: 18, GQ: 27, GR: 27, GT: 28, GW: 25, HN: 28, HR: 21, HU: 28,
    IE: 22, IL: 23, IQ: 23, IR: 26, IS: 26, IT: 27, JO: 30, KM: 27, KW: 30, KZ: 20, LB: 28, LC: 32,
    LI: 21, LT: 20, LU: 20, LV: 21, LY: 25, MA: 28, MC: 27, MD: 24, ME: 22, MG: 27, MK: 19, ML: 28,
    MN: 20, MR: 27, MT: 31, MU: 30, MZ: 25, NE: 28, NI: 28, NL: 18, NO: 15, OM: 23, PK: 24, PL: 28,
    PS: 29, PT: 25, QA: 29, RO: 24, RS: 22, RU: 33, SA: 24, SC: 31, SD: 18, SE: 24, SI: 19, SK: 24,
    SM: 27, SN: 28, SO: 23, ST: 25, SV: 28, TD: 27, TG: 28, TL: 23, TN: 24, TR: 26, UA: 29, VA: 22,
    VG: 24, XK: 20, YE: 30,
  }),
);

/** The IBAN length of a country (two uppercase letters), or undefined when it issues none. */
export function ibanLength(countryCode: string): number | undefined {
  return ibanLengths.get(countryCode);
}

/**
 * Whether `iban` is a valid International Bank Account Number: a country that issues IBANs, that
 * country's length, letters and digits only, and the ISO 13616 mod-97 check equal to 1. Spaces
 * (the printed form, groups of four) and lowercase letters are accepted.
 */
export function ibanValid(iban: string): boolean {
  const s = iban.replace(/ /g, "").toUpperCase();
  if (!/^[A-Z]{2}\d{2}[A-Z0-9]+$/.test(s)) return false;
  if (ibanLengths.get(s.slice(0, 2)) !== s.length) return false;
  return ibanMod97(s) === 1;
}

/** The mod-97 remainder of an uppercase alphanumeric IBAN, rearranged as ISO 13616 prescribes. */
function ibanMod97(s: string): number {
  // Country code and check digits move to the end; letters count as 10..35. Folding one
  // character at a time keeps every intermediate value far below 2^53.
  let rem = 0;
  const n = s.length;
  for (let k = 0; k < n; k++) {
    const c = s.charCodeAt((k + 4) % n);
    if (c <= 57) rem = (rem * 10 + (c - 48)) % 97;
    else rem = (rem * 100 + (c - 55)) % 97;
  }
  return rem;
}

/** A card network with the issuer identification number (IIN) ranges and lengths it uses. */
interface CardNetwork {
  name: string;
  /** Inclusive ranges over the first `digits` digits of the number. */
  ranges: readonly (readonly [number, number, number])[];
  lengths: readonly number[];
}

const sixteenToNineteen = [16, 17, 18, 19] as const;

/**
 * Networks in the order they are tried: more specific ranges first, so that for example
 * Discover's 622126–622925 wins over UnionPay's 62.
 */
const cardNetworks: readonly CardNetwork[] = [
  { name: "amex", ranges: [[2, 34, 34], [2, 37, 37]], lengths: [15] },
  { name: "mir", ranges: [[4, 2200, 2204]], lengths: sixteenToNineteen },
  { name: "mastercard", ranges: [[2, 51, 55], [4, 2221, 2720]], lengths: [16] },
  { name: "discover", ranges: [[4, 6011, 6011], [3, 644, 649], [2, 65, 65], [6, 622126, 622925]], lengths: sixteenToNineteen },
  { name: "unionpay", ranges: [[2, 62, 62]], lengths: sixteenToNineteen },
  { name: "jcb", ranges: [[4, 3528, 3589]], lengths: sixteenToNineteen },
  { name: "diners", ranges: [[3, 300, 305], [4, 3095, 3095], [2, 36, 36], [2, 38, 39]], lengths: [14, 15, 16, 17, 18, 19] },
  {
    name: "maestro",
    ranges: [[4, 5018, 5018], [4, 5020, 5020], [4, 5038, 5038], [4, 5893, 5893], [4, 6304, 6304], [4, 6759, 6759], [4, 6761, 6763]],
    lengths: [13, 14, 15, 16, 17, 18, 19],
  },
  { name: "visa", ranges: [[1, 4, 4]], lengths: [13, 16, 19] },
];

/**
 * The network of a card number (digits only) whose issuer prefix and length match a known
 * network, e.g. "visa" or "amex"; undefined otherwise. The Luhn check is separate.
 */
export function cardNetwork(digits: string): string | undefined {
  for (const network of cardNetworks) {
    if (!network.lengths.includes(digits.length)) continue;
    for (const [width, lo, hi] of network.ranges) {
      const prefix = Number(digits.slice(0, width));
      if (prefix >= lo && prefix <= hi) return network.name;
    }
  }
  return undefined;
}
