import { describe, expect, it } from "vitest";
import { nestedResourceName, parseName, parseNestedName, qualifiedName, resourceId, resourceName } from "./validate.js";

describe("resource names", () => {
  it("builds the names parseName and parseNestedName read", () => {
    expect(resourceName("models", "m1")).toBe("models/m1");
    expect(parseName("name", resourceName("models", "m1"), "models")).toBe("m1");
    const name = nestedResourceName(["models", "adapters", "versions"], ["m1", "a1", 3]);
    expect(name).toBe("models/m1/adapters/a1/versions/3");
    expect(parseNestedName("name", nestedResourceName(["datasets", "versions"], ["d", "v1"]), ["datasets", "versions"])).toEqual(["d", "v1"]);
    expect(() => nestedResourceName(["models", "adapters"], ["m1"])).toThrow(/2 collections but 1 ids/);
  });

  it("takes the id off a name of the collection, and leaves anything else alone", () => {
    expect(resourceId("fineTuningJobs/j1", "fineTuningJobs")).toBe("j1");
    expect(resourceId("j1", "fineTuningJobs")).toBe("j1");
    expect(resourceId("fineTuningJobsX/j1", "fineTuningJobs")).toBe("fineTuningJobsX/j1");
    expect(resourceId("models/m1", "fineTuningJobs")).toBe("models/m1");
  });

  it("qualifies a bare id and keeps a full name", () => {
    expect(qualifiedName("models", "m1")).toBe("models/m1");
    expect(qualifiedName("models", "models/m1")).toBe("models/m1");
    expect(qualifiedName("models", qualifiedName("models", "m1"))).toBe("models/m1");
  });
});
