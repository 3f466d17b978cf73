import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { inspectModelFolder, listTensors, mergeAdapter, readTensorF32, writeTinyAdapter } from "@lathe/models";
import { runCli } from "./cli-process.js";

describe("local model commands", () => {
  const dir = mkdtempSync(join(tmpdir(), "lathe-local-"));

  it("init-tiny writes the same model for the same seed, and a loadable one", async () => {
    for (const d of ["a", "b"]) expect((await runCli(["models", "init-tiny", join(dir, d), "--arch", "qwen2", "--seed", "5"])).code).toBe(0);
    expect(readFileSync(join(dir, "a", "model.safetensors")).equals(readFileSync(join(dir, "b", "model.safetensors")))).toBe(true);
    const m = await inspectModelFolder(join(dir, "a"));
    expect(m.config.architecture).toBe("Qwen2ForCausalLM");
    const bad = await runCli(["models", "init-tiny", join(dir, "c"), "--layers", "0"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("--layers 0");
  });

  it("merge writes base + scale·B·A as a model folder, the same bytes as the TypeScript merge", async () => {
    expect((await runCli(["models", "init-tiny", join(dir, "base")])).code).toBe(0);
    await writeTinyAdapter(join(dir, "lora"), join(dir, "base"), { r: 4, alpha: 8, seed: 2 });
    const r = await runCli(["merge", "--model", join(dir, "base"), "--adapter", join(dir, "lora"), "--out", join(dir, "merged")]);
    expect(r.stderr).toBe("");
    const before = (await listTensors(join(dir, "base"))).find((t) => t.name === "model.layers.0.self_attn.q_proj.weight")!;
    const after = (await listTensors(join(dir, "merged"))).find((t) => t.name === "model.layers.0.self_attn.q_proj.weight")!;
    const a = await readTensorF32(before);
    const b = await readTensorF32(after);
    expect(b.length).toBe(a.length);
    expect(b.some((x, i) => x !== a[i])).toBe(true);
    expect((await inspectModelFolder(join(dir, "merged"))).parameterCount).toBe((await inspectModelFolder(join(dir, "base"))).parameterCount);
    // The engine does the arithmetic natively; the files are those of @lathe/models' merge.
    await mergeAdapter(join(dir, "base"), join(dir, "lora"), join(dir, "merged-ts"));
    expect(readFileSync(join(dir, "merged", "model.safetensors")).equals(readFileSync(join(dir, "merged-ts", "model.safetensors")))).toBe(true);
  });
});
