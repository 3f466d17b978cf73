import { describe, expect, it } from "vitest";
import { allPiiKinds, ibanValid, luhnValid, redactPii, scanPii, type PiiHit, type PiiKind } from "./pii.js";

/** The hits of `text` as [kind, detail, matched text], which reads better in failures than offsets. */
function found(text: string, kinds?: ReadonlySet<PiiKind>): [PiiKind, string, string][] {
  return scanPii(text, kinds).map((h) => [h.kind, h.detail, text.slice(h.start, h.end)]);
}

const awsKey = "AKIAIOSFODNN7EXAMPLE";
const githubToken = "ghp_" + "a1B2c3D4e5".repeat(3) + "f6G7h8";
const jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const pemBlock = [
  "-----BEGIN RSA PRIVATE KEY-----",
  "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi8Y2dZ3tGj6d1y5dAKIAIOSFODNN7EXAMPLE",
  "kf0YQ2GxV9p1f+o3e/S8wA==",
  "-----END RSA PRIVATE KEY-----",
].join("\n");

describe("scanPii finds each kind with its exact span", () => {
  const planted: [PiiKind, string, string][] = [
    ["email", "email", "john.doe+tag@example.co.uk"],
    ["email", "email", "a_b-c%d@mail.sub-domain.example.org"],
    ["phone", "nanp", "(555) 123-4567"],
    ["phone", "nanp", "(555)123-4567"],
    ["phone", "nanp", "555-123-4567"],
    ["phone", "nanp", "555.123.4567"],
    ["phone", "nanp", "1-800-555-0199"],
    ["phone", "e164", "+1 415 555 2671"],
    ["phone", "e164", "+14155552671"],
    ["phone", "e164", "+1 (415) 555-2671"],
    ["phone", "e164", "+44 20 7946 0958"],
    ["phone", "e164", "+44 (0) 20 7946 0958"],
    ["phone", "e164", "+33 1 23 45 67 89"],
    ["phone", "e164", "+49-30-1234567"],
    ["phone", "e164", "+81.3.1234.5678"],
    ["card_number", "visa", "4111 1111 1111 1111"],
    ["card_number", "visa", "4111-1111-1111-1111"],
    ["card_number", "visa", "4111111111111111"],
    ["card_number", "visa", "4222222222222"],
    ["card_number", "mastercard", "5555555555554444"],
    ["card_number", "mastercard", "2223 0000 4840 0011"],
    ["card_number", "amex", "378282246310005"],
    ["card_number", "amex", "3782 822463 10005"],
    ["card_number", "discover", "6011111111111117"],
    ["card_number", "jcb", "3530111333300000"],
    ["card_number", "diners", "30569309025904"],
    ["card_number", "unionpay", "6200000000000005"],
    ["card_number", "mir", "2200000000000004"],
    ["national_id", "us_ssn", "123-45-6789"],
    ["national_id", "us_ssn", "078-05-1120"],
    ["national_id", "us_ssn", "536 22 1234"],
    ["iban", "iban", "DE89 3704 0044 0532 0130 00"],
    ["iban", "iban", "DE89370400440532013000"],
    ["iban", "iban", "GB82 WEST 1234 5698 7654 32"],
    ["iban", "iban", "FR14 2004 1010 0505 0001 3M02 606"],
    ["iban", "iban", "NO9386011117947"],
    ["iban", "iban", "MT84MALT011000012345MTLCAST001S"],
    ["ip_address", "ipv4", "192.168.1.1"],
    ["ip_address", "ipv4", "203.0.113.7"],
    ["ip_address", "ipv4", "255.255.255.255"],
    ["ip_address", "ipv6", "2001:db8::1"],
    ["ip_address", "ipv6", "::1"],
    ["ip_address", "ipv6", "fe80::1ff:fe23:4567:890a"],
    ["ip_address", "ipv6", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"],
    ["ip_address", "ipv6", "::ffff:192.0.2.128"],
    ["api_key", "aws_access_key", awsKey],
    ["api_key", "aws_access_key", "ASIAY34FZKBOKMUTVV7A"],
    ["api_key", "github_token", githubToken],
    ["api_key", "github_token", "ghs_" + "Zx9".repeat(12)],
    ["api_key", "github_pat", "github_pat_11ABCDEFG0123456789abc_" + "x1".repeat(29) + "y"],
    ["api_key", "slack_token", "xoxb-1234567890123-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"],
    ["api_key", "stripe_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"],
    ["api_key", "stripe_key", "rk_live_51H8dEXAMPLEkeyABCDEF"],
    ["api_key", "stripe_key", "sk_test_4eC39HqLyjWDarjtT1zdp7dc"],
    ["api_key", "openai_key", "sk-" + "T3BlbkFJ" + "a1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7"],
    ["api_key", "openai_key", "sk-proj-" + "Ab3_Cd4-Ef5".repeat(6)],
    ["api_key", "anthropic_key", "sk-ant-api03-" + "Zz9-Yy8_Xx7".repeat(8)],
    ["api_key", "google_api_key", "AIzaSyA1234567890abcdefghijklmnopqrstuv"],
    ["api_key", "huggingface_token", "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH"],
    ["api_key", "gitlab_token", "glpat-Ab1Cd2Ef3Gh4Ij5Kl6Mn"],
    ["api_key", "npm_token", "npm_" + "a1B2c3D4e5F6".repeat(3)],
    ["api_key", "jwt", jwt],
    ["api_key", "pem_private_key", pemBlock],
    ["api_key", "pem_private_key", pemBlock.replace(/RSA/g, "OPENSSH")],
    ["api_key", "pem_private_key", pemBlock.replace(/RSA /g, "").replace(/\n/g, "\\n")],
  ];

  it.each(planted)("finds %s (%s) in %j", (kind, detail, value) => {
    const prefix = "Here it is: ";
    const text = `${prefix}${value}. Thanks!`;
    expect(scanPii(text)).toEqual([{ kind, detail, start: prefix.length, end: prefix.length + value.length }]);
  });

  it("finds the value at the very start and the very end of the text", () => {
    expect(scanPii("123-45-6789")).toEqual([{ kind: "national_id", detail: "us_ssn", start: 0, end: 11 }]);
    expect(found("ip 10.0.0.1")).toEqual([["ip_address", "ipv4", "10.0.0.1"]]);
  });

  it("takes an address out of its usual punctuation: quotes, brackets, ports, mailto, CIDR", () => {
    expect(found(`mailto:jane@example.com, "bob@example.org" <ann@example.net>`)).toEqual([
      ["email", "email", "jane@example.com"],
      ["email", "email", "bob@example.org"],
      ["email", "email", "ann@example.net"],
    ]);
    expect(found("connect to 10.0.0.1:8080, [2001:db8::7]:443, 172.16.0.0/12 and fe80::1%eth0")).toEqual([
      ["ip_address", "ipv4", "10.0.0.1"],
      ["ip_address", "ipv6", "2001:db8::7"],
      ["ip_address", "ipv4", "172.16.0.0"],
      ["ip_address", "ipv6", "fe80::1"],
    ]);
  });

  it("takes a quad of small numbers for an address only when the context says so", () => {
    for (const text of ["ping 10.0.0.1", "DNS server 8.8.8.8", "host: '10.0.0.1'", "http://10.1.1.1/", "10.0.0.1:8080", "1.1.1.1/32"]) {
      expect(found(text).map(([, detail]) => detail)).toEqual(["ipv4"]);
    }
    expect(found("steps 10.0.0.1 and 8.8.8.8 of the spec")).toEqual([]);
  });

  it("keeps the card number apart from the expiry and CVV that follow it", () => {
    expect(found("card 4111 1111 1111 1111 12/25 cvv 123")).toEqual([["card_number", "visa", "4111 1111 1111 1111"]]);
  });

  it("keeps a phone number apart from the count that follows it", () => {
    expect(found("call +1 415 555 2671 10 times")).toEqual([["phone", "e164", "+1 415 555 2671"]]);
  });

  it("covers a private key cut off before its END line up to its last base64 line", () => {
    const text = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n\nThe rest is prose.";
    expect(found(text)).toEqual([["api_key", "pem_private_key", text.slice(0, text.indexOf("\n\n"))]]);
  });

  it("reports hits sorted by start", () => {
    const text = `a ${awsKey} b john@example.com c 192.168.0.1 d 555-123-4567 e 123-45-6789`;
    const hits = scanPii(text);
    expect(hits.map((h) => h.kind)).toEqual(["api_key", "email", "ip_address", "phone", "national_id"]);
    expect(hits.map((h) => h.start)).toEqual([...hits.map((h) => h.start)].sort((a, b) => a - b));
  });
});

describe("scanPii does not flag near-misses", () => {
  const nearMisses: [string, string][] = [
    ["an ISO date", "released on 2024-01-15"],
    ["a European date", "am 15.01.2024"],
    ["a US date", "on 01/15/2024"],
    ["a time", "at 12:30"],
    ["a time with seconds", "at 12:30:45 and 10:45:00.123"],
    ["an ISO timestamp with offset", "2024-01-15T10:30:00+01:00"],
    ["a version", "upgrade to version 1.2.3"],
    ["a five-part version", "build 1.2.3.4.5"],
    ["a four-part version", "upgrade to version 1.2.3.4"],
    ["a spec section number", "see RFC 2616 section 8.1.2.2"],
    ["a step number in a comment", "// 4.2.6.1 if the request is aborted"],
    ["a browser version", "Chrome 120.0.6099.109"],
    ["an IPv4-like quad with an octet over 255", "host 999.1.1.1"],
    ["an IPv4-like quad with 256", "host 256.10.10.10"],
    ["octets with leading zeros", "code 01.02.03.04"],
    ["a plain 7-digit number", "population 1234567"],
    ["a 5-digit zip code", "ZIP 90210"],
    ["an order number", "order #8837261 shipped"],
    ["a 7-digit local number", "call 555-1234"],
    ["a price", "costs $1,234.56"],
    ["an ISBN", "ISBN 978-3-16-148410-0"],
    ["a millisecond epoch", "ts 1705312345678"],
    ["a Luhn-invalid card", "card 4111 1111 1111 1112"],
    ["a Luhn-invalid unbroken card", "card 4111111111111112"],
    ["a Luhn-valid number with no card prefix", "ref 1234567812345670"],
    ["a card in odd groups", "4111 11 1111 111 111"],
    ["digits with mixed separators", "4111-1111 1111-1111"],
    ["an SSN with area 000", "SSN 000-12-3456"],
    ["an SSN with area 666", "SSN 666-12-3456"],
    ["an SSN with area 9xx", "SSN 900-12-3456"],
    ["an SSN with group 00", "SSN 123-00-4567"],
    ["an SSN with serial 0000", "SSN 123-45-0000"],
    ["an undashed 9-digit number", "id 123456789"],
    ["an SSN shape inside a longer code", "ref ABC-123-45-6789-X"],
    ["an IBAN with a bad checksum", "DE89 3704 0044 0532 0130 01"],
    ["an IBAN one character short", "DE89 3704 0044 0532 0130 0"],
    ["an IBAN of an unknown country", "XX89370400440532013000"],
    ["an IBAN inside a longer token", "DE89370400440532013000X"],
    ["an address without a domain dot", "user@localhost"],
    ["a bare a@b", "a@b"],
    ["a handle", "follow @handle on social"],
    ["a scoped package", "npm i @scope/pkg@1.2.3"],
    ["a retina image name", "icon@2x.png"],
    ["'sk-' in prose", "keys start with the sk- prefix"],
    ["sk-learn", "pip install sk-learn"],
    ["a long sk- word without digits", "sk-abcdefghijklmnopqrstuvwxyz"],
    ["a hyphenated phrase", "an ask-me-anything thread"],
    ["a short ghp_ prefix", "ghp_short"],
    ["a Python identifier starting hf_", "hf_model_name = 'gpt2'"],
    ["a short AKIA word", "AKIA1234"],
    ["a lone JWT header", "eyJhbGciOiJIUzI1NiJ9"],
    ["a public key block", "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqh\n-----END PUBLIC KEY-----"],
    ["a C++ scope", "std::vector<int> and a::b"],
    ["a Haskell signature", "f :: Int -> Int"],
    ["a MAC address", "MAC 00:1A:2B:3C:4D:5E"],
    ["Vim's filename modifiers", "see *::8* and *:_%:*"],
    ["an aspect ratio", "ratio 16:9"],
    ["a signed decimal", "delta +3.14159265"],
    ["a signed decimal then numbers", "delta +3.14159265 555 123 4567"],
    ["a signed count", "growth +15000000 users"],
    ["spaced single digits", "+1 2 3 4 5 6 7 8"],
    ["three numbers in a row", "scores 555 123 4567"],
    ["a NANP shape inside a code", "ref ORD-555-123-4567"],
    ["a NANP shape with area code 1xx", "tel 155-123-4567"],
  ];

  it.each(nearMisses)("ignores %s", (_what, text) => {
    expect(found(text)).toEqual([]);
  });
});

describe("overlapping candidates", () => {
  it("prefer the longer hit: an IPv4 tail inside an IPv6 address", () => {
    expect(found("from ::ffff:192.0.2.128 today")).toEqual([["ip_address", "ipv6", "::ffff:192.0.2.128"]]);
  });

  it("prefer the longer hit: a national number inside an international one", () => {
    expect(found("call +1 (555) 123-4567")).toEqual([["phone", "e164", "+1 (555) 123-4567"]]);
  });

  it("prefer the longer hit: a key inside a private key block", () => {
    expect(found(pemBlock)).toEqual([["api_key", "pem_private_key", pemBlock]]);
  });

  it("prefer the longer hit: a key-shaped local part of an email address", () => {
    expect(found(`${awsKey}@example.com`)).toEqual([["email", "email", `${awsKey}@example.com`]]);
  });

  it("prefer the longer hit: digit groups of an IBAN that could read as a card", () => {
    expect(found("IBAN DE89 3704 0044 0532 0130 00")).toEqual([["iban", "iban", "DE89 3704 0044 0532 0130 00"]]);
  });

  it("never come back overlapping", () => {
    const text = `${pemBlock} ${awsKey}@example.com ::ffff:10.0.0.1 +1 (555) 123-4567`;
    const hits = scanPii(text);
    for (let i = 1; i < hits.length; i++) expect(hits[i]!.start).toBeGreaterThanOrEqual(hits[i - 1]!.end);
  });
});

describe("scanPii kinds filter", () => {
  const text = "john@example.com 555-123-4567 203.0.113.9";

  it("looks only for the kinds asked for", () => {
    expect(found(text, new Set<PiiKind>(["email"]))).toEqual([["email", "email", "john@example.com"]]);
    expect(found(text, new Set<PiiKind>(["phone", "ip_address"])).map(([kind]) => kind)).toEqual(["phone", "ip_address"]);
    expect(found(text, new Set<PiiKind>())).toEqual([]);
  });

  it("looks for every kind by default", () => {
    expect(found(text, new Set(allPiiKinds))).toEqual(found(text));
    expect(new Set(allPiiKinds).size).toBe(7);
  });
});

describe("unicode text", () => {
  it("reports UTF-16 offsets after an emoji", () => {
    const text = "😀 mail me at a@example.com 🎉";
    const [hit] = scanPii(text);
    expect(hit).toEqual({ kind: "email", detail: "email", start: 14, end: 27 });
    expect(text.slice(hit!.start, hit!.end)).toBe("a@example.com");
    expect(redactPii(text)).toBe("😀 mail me at [EMAIL] 🎉");
  });

  it("finds numbers next to non-Latin text", () => {
    expect(found("电话：555-123-4567，卡号 4111111111111111。")).toEqual([
      ["phone", "nanp", "555-123-4567"],
      ["card_number", "visa", "4111111111111111"],
    ]);
  });
});

describe("redactPii", () => {
  it("replaces every hit by its typed placeholder", () => {
    const text =
      "Mail john@example.com or call (555) 123-4567. Card 4111 1111 1111 1111, SSN 123-45-6789, " +
      `IBAN DE89 3704 0044 0532 0130 00, from 198.51.100.23, key ${awsKey}.`;
    expect(redactPii(text)).toBe(
      "Mail [EMAIL] or call [PHONE]. Card [CARD_NUMBER], SSN [NATIONAL_ID], IBAN [IBAN], from [IP_ADDRESS], key [API_KEY].",
    );
  });

  it("uses the hits it is given, in any order", () => {
    const text = "a@example.com and b@example.com";
    const hits = scanPii(text);
    expect(redactPii(text, [...hits].reverse())).toBe("[EMAIL] and [EMAIL]");
    expect(redactPii(text, hits.slice(1))).toBe("a@example.com and [EMAIL]");
    expect(redactPii(text, [])).toBe(text);
  });

  it("collapses overlapping hits from elsewhere into one placeholder", () => {
    const hits: PiiHit[] = [
      { kind: "phone", start: 0, end: 8, detail: "e164" },
      { kind: "card_number", start: 4, end: 12, detail: "visa" },
    ];
    expect(redactPii("0123456789abcdef", hits)).toBe("[PHONE]cdef");
  });

  it("rejects a hit outside the text", () => {
    expect(() => redactPii("short", [{ kind: "email", start: 2, end: 10, detail: "email" }])).toThrow(RangeError);
  });

  it("leaves text without PII as it is", () => {
    expect(redactPii("Nothing to see here, version 1.2.3 on 2024-01-15.")).toBe("Nothing to see here, version 1.2.3 on 2024-01-15.");
  });
});

describe("edge inputs", () => {
  it("returns nothing for an empty string", () => {
    expect(scanPii("")).toEqual([]);
    expect(redactPii("")).toBe("");
  });

  it("scans 1 MB lines of adversarial shapes without blowing up", () => {
    const mb = 1 << 20;
    const fill = (unit: string) => unit.repeat(Math.ceil(mb / unit.length));
    const lines = [
      fill("7"),
      fill("1.1."),
      fill("a@"),
      fill("ab:"),
      fill("1:"),
      fill("+1 "),
      fill("4111 "),
      fill("-"),
      fill("DE89 "),
      "eyJ" + fill("A"),
      "ghp_" + fill("a1"),
      "sk-" + fill("x1-"),
      "x@" + fill("a"),
      fill("a") + "@example.com",
      "-----BEGIN RSA PRIVATE KEY-----\n" + fill("QUJD\n"),
      fill("-----BEGIN PRIVATE KEY-----\n"),
    ];
    for (const line of lines) {
      expect(line.length).toBeGreaterThanOrEqual(mb);
      expect(Array.isArray(scanPii(line))).toBe(true);
    }
  });

  it("finds every planted value in a 1 MB line of prose", () => {
    const values = ["john@example.com", "555-123-4567", "4111 1111 1111 1111", "123-45-6789", "203.0.113.7", awsKey];
    const parts: string[] = [];
    let length = 0;
    let planted = 0;
    for (let i = 0; length < 1 << 20; i++) {
      parts.push(`Sentence ${i} on 2024-01-15 at 12:30 mentions version 1.2.${i % 10} and costs $${i}.99.`);
      if (i % 50 === 0) {
        parts.push(values[planted % values.length]!);
        planted++;
      }
      length += parts[parts.length - 1]!.length + 1;
    }
    const text = parts.join(" ");
    const hits = scanPii(text);
    expect(hits).toHaveLength(planted);
    expect(new Set(hits.map((h) => text.slice(h.start, h.end)))).toEqual(new Set(values));
  });
});

describe("luhnValid", () => {
  it("accepts numbers whose Luhn check digit is right", () => {
    expect(luhnValid("4111111111111111")).toBe(true);
    expect(luhnValid("378282246310005")).toBe(true);
    expect(luhnValid("79927398713")).toBe(true);
  });

  it("rejects a wrong check digit, non-digits and too-short input", () => {
    expect(luhnValid("4111111111111112")).toBe(false);
    expect(luhnValid("4111 1111 1111 1111")).toBe(false);
    expect(luhnValid("0")).toBe(false);
    expect(luhnValid("")).toBe(false);
  });
});

describe("ibanValid", () => {
  it("accepts valid IBANs, printed or electronic, in any case", () => {
    expect(ibanValid("DE89 3704 0044 0532 0130 00")).toBe(true);
    expect(ibanValid("DE89370400440532013000")).toBe(true);
    expect(ibanValid("gb82west12345698765432")).toBe(true);
    expect(ibanValid("LC55HEMM000100010012001200023015")).toBe(true);
  });

  it("rejects a bad checksum, a wrong length for the country, an unknown country and junk", () => {
    expect(ibanValid("DE89370400440532013001")).toBe(false);
    expect(ibanValid("DE8937040044053201300")).toBe(false);
    expect(ibanValid("GB8237040044053201300000")).toBe(false);
    expect(ibanValid("XX89370400440532013000")).toBe(false);
    expect(ibanValid("DE89-3704-0044-0532-0130-00")).toBe(false);
    expect(ibanValid("")).toBe(false);
  });
});
