import { describe, expect, it } from "vitest";
import { subjectMatches } from "./bus.js";

describe("subjectMatches", () => {
  it.each([
    ["lathe.registry.v1.model_created", "lathe.registry.v1.model_created", true],
    ["lathe.registry.v1.model_created", "lathe.registry.v1.model_deleted", false],
    ["lathe.registry.v1.*", "lathe.registry.v1.model_created", true],
    ["lathe.*.v1.model_created", "lathe.registry.v1.model_created", true],
    ["lathe.*", "lathe.registry.v1.model_created", false],
    ["lathe.registry.v1.*", "lathe.registry.v1", false],
    ["lathe.>", "lathe.registry.v1.model_created", true],
    ["lathe.>", "lathe.x", true],
    ["lathe.>", "lathe", false],
    ["lathe.registry.>", "lathe.trainer.v1.job_created", false],
    [">", "anything.at.all", true],
    ["lathe.registry", "lathe.registry.v1", false],
    ["lathe.registry.v1", "lathe.registry", false],
  ])("%s against %s is %s", (pattern, subject, expected) => {
    expect(subjectMatches(pattern, subject)).toBe(expected);
  });
});
