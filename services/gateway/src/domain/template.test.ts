import { describe, expect, test } from "vitest";
import { OpenAiError } from "./errors.js";
import type { ResolvedModel } from "./registry.js";
import { checkChatTemplate } from "./template.js";

const base: ResolvedModel = { id: "tiny", model: "models/tiny", baseDigest: "sha256:b", contextLength: 128 };
const withAdapter = (fp: string): ResolvedModel => ({ ...base, id: "tiny:support", adapter: { version: "models/tiny/adapters/support/versions/1", digest: "sha256:a", chatTemplateFingerprint: fp } });

describe("checkChatTemplate", () => {
  test("the bare base, a matching fingerprint and an unrecorded one pass", () => {
    expect(() => checkChatTemplate(base, "sha256:t")).not.toThrow();
    expect(() => checkChatTemplate(withAdapter("sha256:t"), "sha256:t")).not.toThrow();
    expect(() => checkChatTemplate(withAdapter(""), "sha256:t")).not.toThrow();
  });

  test("another template, or none applied, is refused with OpenAI's 400 and code chat_template_mismatch", () => {
    for (const applied of ["sha256:other", ""]) {
      let err: unknown;
      try {
        checkChatTemplate(withAdapter("sha256:t"), applied);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(OpenAiError);
      const e = err as OpenAiError;
      expect(e.status).toBe(400);
      expect(e.body().error).toMatchObject({ type: "invalid_request_error", code: "chat_template_mismatch", param: "model" });
      expect(e.message).toContain("trained with another chat template");
      expect(e.message).toContain("garbled");
    }
  });
});
