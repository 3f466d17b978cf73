import { describe, expect, test } from "vitest";
import { openAiName, parseModelName, registryNames } from "./model-name.js";

describe("model names", () => {
  test("BASE, BASE:ADAPTER, BASE:ADAPTER@N and BASE:ADAPTER@ALIAS", () => {
    expect(parseModelName("tiny")).toEqual({ base: "tiny" });
    expect(parseModelName("tiny:support")).toEqual({ base: "tiny", adapter: "support", version: undefined, alias: undefined });
    expect(parseModelName("tiny:support@3")).toEqual({ base: "tiny", adapter: "support", version: 3, alias: undefined });
    expect(parseModelName("tiny:support@prod")).toEqual({ base: "tiny", adapter: "support", version: undefined, alias: "prod" });
    expect(registryNames(parseModelName("tiny:support@3")!)).toEqual({ model: "models/tiny", adapter: "models/tiny/adapters/support", version: "models/tiny/adapters/support/versions/3" });
    expect(registryNames(parseModelName("tiny:support@prod")!).alias).toBe("models/tiny/adapters/support/aliases/prod");
  });

  test("anything else is no name", () => {
    for (const bad of ["", "Tiny", "tiny:", "tiny:support@", "tiny:support@0", "a:b:c", "models/tiny", "tiny@prod"]) expect(parseModelName(bad)).toBeUndefined();
  });

  test("registry names back to OpenAI names", () => {
    expect(openAiName("models/tiny")).toBe("tiny");
    expect(openAiName("models/tiny", "models/tiny/adapters/support")).toBe("tiny:support");
    expect(openAiName("models/tiny", "models/tiny/adapters/support", "models/tiny/adapters/support/aliases/prod")).toBe("tiny:support@prod");
  });
});
