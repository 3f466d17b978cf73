// Choosing the backend a model computes on: devices() lists what this engine can use here, the
// config's device picks one by name, and a name that is not usable here is a typed error naming
// those that are.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { readModelConfig, writeTinyModel } from "@lathe/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EngineError, Model, devices, engineConfig } from "./index.js";
import { caught } from "./test-support/caught.js";

let dir = "";

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "lathe-engine-device-"));
  await writeTinyModel(dir, { hidden: 32, intermediate: 64, seed: 3 });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("devices", () => {
  it("lists cpu first, then only device backends, each once", () => {
    const list = devices();
    expect(list[0]).toBe("cpu");
    expect(new Set(list).size).toBe(list.length);
    for (const name of list.slice(1)) expect(name).not.toBe("cpu");
  });

  it("a model loaded with device cpu computes on the cpu", async () => {
    const model = await Model.load(dir, { numThreads: 1, device: "cpu" });
    try {
      expect(model.device).toBe("cpu");
      expect(model.config.backend).toBe("cpu");
    } finally {
      model.free();
    }
  });

  it("the default device is the first device backend usable here, else the cpu", async () => {
    const model = await Model.load(dir, { numThreads: 1 });
    try {
      expect(model.device).toBe(devices()[1] ?? "cpu");
    } finally {
      model.free();
    }
  });

  it("an unknown device fails with UNSUPPORTED naming the devices there are", async () => {
    const err = await caught(() => Model.load(dir, { device: "tpu" }));
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe("UNSUPPORTED");
    expect((err as EngineError).message).toContain("'tpu'");
    expect((err as EngineError).message).toContain(`available here: ${devices().join(", ")}`);
  });

  it("cuda where this engine cannot use it fails with UNSUPPORTED, not a crash or a silent cpu model", async () => {
    if (devices().includes("cuda")) return; // a CUDA build on a GPU machine: the case does not arise
    const err = await caught(async () => Model.create(engineConfig(await readModelConfig(dir), 1, "cuda")));
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe("UNSUPPORTED");
    expect((err as EngineError).message).toContain("'cuda'");
  });
});
