import { describe, expect, it } from "vitest";
import { artifactUri, digestHex, prefixedDigest } from "./digest.js";

const hex = "ab".repeat(32);

describe("digests", () => {
  it("strip and add the sha256: prefix, each leaving the other form alone", () => {
    expect(digestHex(`sha256:${hex}`)).toBe(hex);
    expect(digestHex(hex)).toBe(hex);
    expect(prefixedDigest(hex)).toBe(`sha256:${hex}`);
    expect(prefixedDigest(`sha256:${hex}`)).toBe(`sha256:${hex}`);
    expect(digestHex(prefixedDigest(hex))).toBe(hex);
    expect(digestHex("")).toBe("");
  });

  it("strips the prefix at the start only", () => {
    expect(digestHex(`x-sha256:${hex}`)).toBe(`x-sha256:${hex}`);
  });

  it("builds an artifact URI from either form", () => {
    expect(artifactUri(hex)).toBe(`artifact:sha256:${hex}`);
    expect(artifactUri(`sha256:${hex}`)).toBe(`artifact:sha256:${hex}`);
  });
});
