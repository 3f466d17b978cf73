import { AppError } from "@lathe/kit";
import { describe, expect, it } from "vitest";
import { givesUp, maxRegistrationAttempts } from "./registration.js";

describe("the registration worker's retries", () => {
  it("retries what kit's retryableCodes lets pass, until the last attempt", () => {
    for (const code of ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED"] as const) {
      const err = new AppError(code, code, "passing");
      expect(givesUp(err, 0)).toBe(false);
      expect(givesUp(err, maxRegistrationAttempts - 2)).toBe(false);
      expect(givesUp(err, maxRegistrationAttempts - 1)).toBe(true);
    }
    // A full disk is RESOURCE_EXHAUSTED: it may pass once space is freed.
    expect(givesUp(Object.assign(new Error("no space"), { code: "ENOSPC" }), 0)).toBe(false);
  });

  it("gives up at once on an error that cannot pass, INTERNAL and unknown errors included", () => {
    for (const err of [
      new AppError("INTERNAL", "ARTIFACT_CORRUPTED", "artifact sha256:… is corrupted"),
      new AppError("FAILED_PRECONDITION", "ADAPTER_NOT_STORED", "no stored adapter"),
      new AppError("INVALID_ARGUMENT", "INVALID_FIELD", "does not fit its base"),
      new AppError("NOT_FOUND", "ARTIFACT_NOT_FOUND", "gone"),
      new AppError("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", "slow"),
      new Error("a bug"),
    ]) {
      expect(givesUp(err, 0)).toBe(true);
    }
  });
});
