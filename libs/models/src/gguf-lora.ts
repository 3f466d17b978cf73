/**
 * PEFT LoRA adapter → GGUF LoRA adapter, which llama.cpp applies over an unmerged base model
 * exported by exportGguf, as its convert_lora_to_gguf.py writes one: `general.type` "adapter",
 * `adapter.type` "lora", `adapter.lora.alpha`, and per adapted weight `<name>.lora_a` (A, HF shape
 * [r, in], GGUF dims [in, r]) and `<name>.lora_b` (B, [out, r], dims [r, out]) under the base's
 * llama.cpp tensor name. llama.cpp adds scale·alpha/r·B·A·x with r read from lora_b.
 */
import path from "node:path";
import { readModelConfig } from "./config.js";
import { ModelFormatError } from "./errors.js";
import { writeGgufPlanned, type GgufTensor, type GgufTensorPlan, type GgufValue } from "./gguf.js";
import { FILE_TYPE, LAYER_TENSORS, ggufArchitecture, permuteRotary } from "./gguf-export.js";
import { ADAPTER_WEIGHTS_FILE, pairLoraTensors, readPeftAdapter, type LoraPair } from "./peft.js";
import { listTensors, readTensorF32, type TensorInfo } from "./safetensors.js";

export interface ExportGgufLoraOptions {
  /** Stored type of lora_a and lora_b. Default "F32" (llama.cpp's converter defaults to F16; the factors are small). */
  dtype?: "F32" | "F16";
  /** `general.name`. Default: the adapter folder's name. */
  name?: string;
}

const LAYER_MODULE = /^model\.layers\.(\d+)\.((?:self_attn|mlp)\.\w+)$/;
const HF_TO_GGUF = new Map(LAYER_TENSORS);

/**
 * Writes `outFile` as a GGUF LoRA adapter for the model in `baseModelDir` (which llama.cpp must
 * load from exportGguf's file of that folder), from the PEFT adapter in `adapterDir`. Each pair
 * keeps its f32 values (lora_a, lora_b as `opts.dtype`); for the llama architecture, the rows of
 * q_proj's and k_proj's B are permuted as exportGguf permutes the base weights (A's columns are
 * the layer's inputs, which are not). `adapter.lora.alpha` is lora_alpha, or lora_alpha·√r for an
 * rsLoRA adapter, so that llama.cpp's alpha/r is PEFT's scale either way.
 * @throws ModelFormatError naming the file: what readPeftAdapter refuses, a base llama.cpp has no
 * export for, a tensor adapting a module the base lacks or does not fit, an lm_head adapter over a
 * base with tied embeddings (llama.cpp's base has no output.weight to adapt: merge it instead).
 */
export async function exportGgufLora(adapterDir: string, baseModelDir: string, outFile: string, opts: ExportGgufLoraOptions = {}): Promise<void> {
  const dtype = opts.dtype ?? "F32";
  const cfg = await readModelConfig(baseModelDir);
  const arch = ggufArchitecture(cfg, baseModelDir);
  const adapter = await readPeftAdapter(adapterDir);
  const adapterFile = path.join(adapterDir, ADAPTER_WEIGHTS_FILE);
  const base = new Map((await listTensors(baseModelDir)).map((t) => [t.name, t]));

  const planned: Array<{ pair: LoraPair<TensorInfo>; ggufName: string; permuteHeads: number | null }> = [];
  for (const pair of pairLoraTensors(adapterFile, adapter.tensors, adapter.r)) {
    const fail = (why: string): never => {
      throw new ModelFormatError(adapterFile, `tensor \`${pair.a.name}\` ${why}`);
    };
    const weight = `${pair.module}.weight`;
    let ggufName: string;
    let permuteHeads: number | null = null;
    const layer = LAYER_MODULE.exec(pair.module);
    if (pair.module === "lm_head") {
      if (cfg.tieWordEmbeddings) {
        fail("adapts lm_head, which the base model ties to its embeddings: llama.cpp has no separate output weight to apply it to (merge the adapter instead)");
      }
      ggufName = "output.weight";
    } else if (layer !== null && HF_TO_GGUF.has(layer[2]!)) {
      ggufName = `blk.${layer[1]}.${HF_TO_GGUF.get(layer[2]!)}.weight`;
      if (arch === "llama" && layer[2] === "self_attn.q_proj") permuteHeads = cfg.numHeads;
      if (arch === "llama" && layer[2] === "self_attn.k_proj") permuteHeads = cfg.numKvHeads;
    } else {
      return fail(`adapts \`${pair.module}\`, which has no llama.cpp LoRA name (supported: the attention and MLP projections, lm_head)`);
    }
    const target = base.get(weight) ?? fail(`adapts \`${weight}\`, which the base model does not have`);
    const [rows, cols] = target.shape;
    if (target.shape.length !== 2 || pair.a.shape[1] !== cols || pair.b.shape[0] !== rows) {
      fail(`[${pair.a.shape.join(", ")}] with \`${pair.b.name}\` [${pair.b.shape.join(", ")}] does not fit the base's \`${weight}\` [${target.shape.join(", ")}]`);
    }
    planned.push({ pair, ggufName, permuteHeads });
  }
  // llama.cpp looks its LoRA tensors up by name; the base's order (layer by layer, output last) reads best.
  const rank = (name: string): number[] => {
    const m = /^blk\.(\d+)\.(\w+)\.weight$/.exec(name);
    return m === null ? [Infinity, 0] : [Number(m[1]), LAYER_TENSORS.findIndex(([, g]) => g === m[2])];
  };
  planned.sort((x, y) => {
    const [a, b] = [rank(x.ggufName), rank(y.ggufName)];
    return (a[0]! - b[0]!) || (a[1]! - b[1]!);
  });

  const plan: GgufTensorPlan[] = planned.flatMap(({ pair, ggufName }) => [
    { name: `${ggufName}.lora_a`, shape: [...pair.a.shape], type: dtype },
    { name: `${ggufName}.lora_b`, shape: [...pair.b.shape], type: dtype },
  ]);
  const alpha = adapter.useRslora ? adapter.loraAlpha * Math.sqrt(adapter.r) : adapter.loraAlpha;
  const metadata: Array<[string, GgufValue]> = [
    ["general.architecture", arch],
    ["general.type", "adapter"],
    ["general.name", opts.name ?? path.basename(path.resolve(adapterDir))],
    ["general.file_type", { type: "uint32", value: FILE_TYPE[dtype] }],
    ["adapter.type", "lora"],
    ["adapter.lora.alpha", { type: "float32", value: alpha }],
  ];

  async function* tensors(): AsyncGenerator<GgufTensor> {
    for (const { pair, ggufName, permuteHeads } of planned) {
      yield { name: `${ggufName}.lora_a`, shape: [...pair.a.shape], type: dtype, data: await readTensorF32(pair.a) };
      let b = await readTensorF32(pair.b);
      if (permuteHeads !== null) b = permuteRotary(b, pair.b.shape, permuteHeads);
      yield { name: `${ggufName}.lora_b`, shape: [...pair.b.shape], type: dtype, data: b };
    }
  }
  await writeGgufPlanned(outFile, metadata, plan, tensors());
}
