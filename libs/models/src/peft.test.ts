import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFormatError, readPeftAdapter, readTensorF32, writePeftAdapter, writeSafetensors, writeTinyAdapter, writeTinyModel } from "./index.js";

async function editJson(file: string, edit: (json: Record<string, unknown>) => void): Promise<void> {
  const json = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
  edit(json);
  await writeFile(file, JSON.stringify(json, null, 2));
}

async function refusal(dir: string, file: string, ...fragments: string[]): Promise<void> {
  const err = await readPeftAdapter(dir).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ModelFormatError);
  expect((err as ModelFormatError).file).toBe(path.join(dir, file));
  for (const fragment of fragments) expect((err as Error).message).toContain(fragment);
}

describe("PEFT adapters", () => {
  let root: string;
  let base: string;
  let n = 0;
  const fresh = (): string => path.join(root, `adapter-${n++}`);
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lathe-peft-"));
    base = path.join(root, "base");
    await writeTinyModel(base, { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128 });
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("reads what writeTinyAdapter writes: settings, scale alpha/r and PEFT's tensor names and shapes", async () => {
    const dir = fresh();
    await writeTinyAdapter(dir, base, { r: 4, alpha: 8, targetModules: ["q_proj", "v_proj", "down_proj", "lm_head"] });
    const adapter = await readPeftAdapter(dir);
    expect(adapter).toMatchObject({ r: 4, loraAlpha: 8, loraDropout: 0.05, useRslora: false, baseModelNameOrPath: base, scale: 2 });
    expect(adapter.targetModules).toEqual(["down_proj", "lm_head", "q_proj", "v_proj"]);
    const shapes = Object.fromEntries(adapter.tensors.map((t) => [t.name, t.shape]));
    expect(Object.keys(shapes)).toHaveLength(2 * (2 * 3 + 1));
    expect(shapes["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]).toEqual([4, 64]);
    expect(shapes["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]).toEqual([64, 4]);
    expect(shapes["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]).toEqual([32, 4]);
    expect(shapes["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]).toEqual([4, 128]);
    expect(shapes["base_model.model.lm_head.lora_B.weight"]).toEqual([512, 4]);
    for (const t of adapter.tensors) expect((await readTensorF32(t)).some((v) => v !== 0), t.name).toBe(true);
  });

  it("writes adapter_config.json as PEFT does, with keys sorted", async () => {
    const dir = fresh();
    await writeTinyAdapter(dir, base);
    const text = await readFile(path.join(dir, "adapter_config.json"), "utf8");
    const json = JSON.parse(text) as Record<string, unknown>;
    expect(Object.keys(json)).toEqual([...Object.keys(json)].sort());
    expect(json).toMatchObject({
      peft_type: "LORA", task_type: "CAUSAL_LM", r: 8, lora_alpha: 16, target_modules: ["q_proj", "v_proj"],
      use_rslora: false, use_dora: false, bias: "none", modules_to_save: null, fan_in_fan_out: false, inference_mode: true,
    });
    expect(text.startsWith('{\n  "alpha_pattern": {},\n')).toBe(true);
    const weights = await readFile(path.join(dir, "adapter_model.safetensors"));
    const header = JSON.parse(weights.subarray(8, 8 + Number(weights.readBigUInt64LE(0))).toString()) as Record<string, unknown>;
    expect(header["__metadata__"]).toEqual({ format: "pt" });
  });

  it("scales rsLoRA adapters by alpha/sqrt(r), and reads a regex target_modules", async () => {
    const dir = fresh();
    await writeTinyAdapter(dir, base, { r: 16, alpha: 8, useRslora: true, targetModules: ["k_proj", "o_proj"] });
    await editJson(path.join(dir, "adapter_config.json"), (json) => {
      json["target_modules"] = ".*\\.(k_proj|o_proj)";
      json["task_type"] = null;
    });
    const adapter = await readPeftAdapter(dir);
    expect(adapter.scale).toBe(2);
    expect(adapter.targetModules).toEqual(["k_proj", "o_proj"]);
  });

  it("names the tensor whose partner is missing or whose shape disagrees with r", async () => {
    const dir = fresh();
    await writeTinyAdapter(dir, base, { r: 4 });
    const { tensors } = await readPeftAdapter(dir);
    const kept = tensors.filter((t) => t.name !== "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight");
    const data = await Promise.all(kept.map(async (t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: await readTensorF32(t) })));
    await writeSafetensors(path.join(dir, "adapter_model.safetensors"), data, { format: "pt" });
    await refusal(dir, "adapter_model.safetensors", "tensor `base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight` has no `base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight`");

    const other = fresh();
    await writeTinyAdapter(other, base, { r: 4 });
    await editJson(path.join(other, "adapter_config.json"), (json) => {
      json["r"] = 8;
    });
    await refusal(other, "adapter_model.safetensors", "tensor `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` has shape [4, 64], expected [8, in] for r=8");
  });

  it("refuses settings it cannot apply, naming adapter_config.json", async () => {
    const dir = fresh();
    await writeTinyAdapter(dir, base);
    const file = path.join(dir, "adapter_config.json");
    const original = await readFile(file, "utf8");
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ peft_type: "IA3" }, '`peft_type` must be "LORA", got "IA3"'],
      [{ task_type: "SEQ_CLS" }, '`task_type` must be "CAUSAL_LM"'],
      [{ use_dora: true }, "DoRA"],
      [{ rank_pattern: { q_proj: 4 } }, "`rank_pattern` is not supported"],
      [{ modules_to_save: ["embed_tokens"] }, "`modules_to_save` (embed_tokens) is not supported"],
      [{ r: 0 }, "`r` must be a positive integer"],
    ];
    for (const [change, message] of cases) {
      await writeFile(file, JSON.stringify({ ...(JSON.parse(original) as object), ...change }));
      await refusal(dir, "adapter_config.json", message);
    }
    await writeFile(file, original);
    await rm(path.join(dir, "adapter_model.safetensors"));
    await writeFile(path.join(dir, "adapter_model.bin"), "pickle");
    await refusal(dir, "adapter_model.safetensors", "adapter_model.bin, a pickle, is not read");
  });

  it("refuses weights for a module that target_modules does not name, as PEFT matches names and patterns", async () => {
    const dir = fresh();
    await writeTinyAdapter(dir, base, { r: 2, targetModules: ["q_proj", "k_proj", "v_proj"] });
    const configFile = path.join(dir, "adapter_config.json");
    const setTargets = (targets: unknown): Promise<void> => editJson(configFile, (json) => {
      json["target_modules"] = targets;
    });
    await setTargets(["q_proj", "v_proj"]);
    await refusal(dir, "adapter_model.safetensors", "tensor `base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight` adapts k_proj, which is not in target_modules [q_proj, v_proj]");
    // A name matches the whole path or its last dotted parts, never part of a name.
    await setTargets(["self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.1.self_attn.k_proj", "v_proj"]);
    expect((await readPeftAdapter(dir)).targetModules).toHaveLength(4);
    await setTargets(["q_proj", "_proj", "v_proj"]);
    await refusal(dir, "adapter_model.safetensors", "adapts k_proj, which is not in target_modules [q_proj, _proj, v_proj]");
    // A string is a pattern that the whole module path must match (re.fullmatch).
    await setTargets(String.raw`.*\.(q|v)_proj`);
    await refusal(dir, "adapter_model.safetensors", String.raw`adapts k_proj, which target_modules ".*\\.(q|v)_proj" does not select`);
    await setTargets(String.raw`model\.layers\.(?P<layer>\d+)\.self_attn\.[qkv]_proj`);
    expect((await readPeftAdapter(dir)).targetModules).toEqual(["k_proj", "q_proj", "v_proj"]);
    await setTargets("q_proj");
    await refusal(dir, "adapter_model.safetensors", 'which target_modules "q_proj" does not select');
    await setTargets("([a-z_.0-9]+)+!");
    await refusal(dir, "adapter_config.json", "`target_modules` takes over 1000 ms to match");
    await setTargets("(unclosed");
    await refusal(dir, "adapter_config.json", "`target_modules` is a pattern Lathe cannot read (SyntaxError: Invalid regular expression)");
  });

  it("refuses an adapter holding a NaN or an infinity, naming the tensor and the element", async () => {
    const settings = { r: 8, loraAlpha: 16, loraDropout: 0, targetModules: ["q_proj"], useRslora: false, baseModelNameOrPath: base };
    const prefix = "base_model.model.model.layers.0.self_attn.q_proj";
    // lora_A is larger than the 1 MiB scanned at a time, so the element index crosses chunks.
    const a = new Float32Array(8 * 40_000).fill(0.5);
    const b = new Float32Array(64 * 8).fill(0.25);
    const write = async (dir: string, dtype: "F32" | "F16" | "BF16"): Promise<void> => {
      await writePeftAdapter(dir, { ...settings, tensors: [{ name: `${prefix}.lora_A.weight`, shape: [8, 40_000], data: a }, { name: `${prefix}.lora_B.weight`, shape: [64, 8], data: b }] });
      if (dtype !== "F32") {
        await writeSafetensors(path.join(dir, "adapter_model.safetensors"), [
          { name: `${prefix}.lora_A.weight`, dtype, shape: [8, 40_000], data: a },
          { name: `${prefix}.lora_B.weight`, dtype, shape: [64, 8], data: b },
        ]);
      }
    };
    const clean = fresh();
    await write(clean, "F32");
    expect((await readPeftAdapter(clean)).tensors).toHaveLength(2);

    b[17] = NaN;
    const f32 = fresh();
    await write(f32, "F32");
    await refusal(f32, "adapter_model.safetensors", `tensor \`${prefix}.lora_B.weight\` holds a NaN at element 17`);
    b[17] = 0.25;

    a[300_001] = -Infinity;
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      const dir = fresh();
      await write(dir, dtype);
      await refusal(dir, "adapter_model.safetensors", `tensor \`${prefix}.lora_A.weight\` holds an infinity at element 300001`);
    }
    a[300_001] = 7e4; // finite in f32 and bf16, past f16's largest (65504): an infinity once stored as f16
    const f16 = fresh();
    await write(f16, "F16");
    await refusal(f16, "adapter_model.safetensors", "holds an infinity at element 300001");
    const bf16 = fresh();
    await write(bf16, "BF16");
    expect((await readPeftAdapter(bf16)).tensors).toHaveLength(2);
  });

  it("refuses to write tensors that are not complete LoRA pairs", async () => {
    const tensors = [{ name: "base_model.model.lm_head.lora_A.weight", shape: [2, 4], data: new Float32Array(8) }];
    const settings = { r: 2, loraAlpha: 4, loraDropout: 0, targetModules: ["lm_head"], useRslora: false, baseModelNameOrPath: "x" };
    await expect(writePeftAdapter(fresh(), { ...settings, tensors })).rejects.toThrow("has no `base_model.model.lm_head.lora_B.weight`");
    const embedding = [{ name: "base_model.model.model.embed_tokens.lora_embedding_A", shape: [2, 4], data: new Float32Array(8) }];
    await expect(writePeftAdapter(fresh(), { ...settings, tensors: embedding })).rejects.toThrow("LoRA on embeddings is not supported");
  });
});
