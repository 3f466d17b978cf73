import { describe, expect, it } from "vitest";
import { adapterName, adapterVersionName, aliasName, datasetName, datasetVersionName, jobId, jobName, lastId, modelName } from "../src/names.js";

describe("resource names", () => {
  it("expands the short forms and passes full names through", () => {
    expect(modelName("tiny")).toBe("models/tiny");
    expect(modelName("models/tiny")).toBe("models/tiny");
    expect(adapterName("tiny/support")).toBe("models/tiny/adapters/support");
    expect(adapterName("models/tiny/adapters/support")).toBe("models/tiny/adapters/support");
    expect(() => adapterName("tiny")).toThrow("tiny: expected MODEL/ADAPTER (or models/M/adapters/A)");
    expect(adapterVersionName("tiny/support@3")).toBe("models/tiny/adapters/support/versions/3");
    expect(adapterVersionName("models/tiny/adapters/support/versions/3")).toBe("models/tiny/adapters/support/versions/3");
    expect(() => adapterVersionName("tiny/support")).toThrow("tiny/support: expected MODEL/ADAPTER@VERSION");
    expect(aliasName("tiny/support", "production")).toBe("models/tiny/adapters/support/aliases/production");
    expect(datasetName("support")).toBe("datasets/support");
    expect(datasetVersionName("support@s-train")).toBe("datasets/support/versions/s-train");
    expect(datasetVersionName("datasets/support/versions/v1")).toBe("datasets/support/versions/v1");
    expect(jobName("support-1")).toBe("fineTuningJobs/support-1");
    expect(jobName("fineTuningJobs/support-1")).toBe("fineTuningJobs/support-1");
  });

  it("takes the ids out of names the server sent", () => {
    expect(jobId("fineTuningJobs/support-1")).toBe("support-1");
    expect(lastId("models/tiny/adapters/support/versions/1")).toBe("1");
    expect(lastId("models/tiny/adapters/support/aliases/production")).toBe("production");
  });
});
