import { copyFile, mkdir, readdir, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { readModelConfig } from "./config.js";
import { ModelFormatError } from "./errors.js";
import { ADAPTER_WEIGHTS_FILE, pairLoraTensors, readPeftAdapter, type LoraPair } from "./peft.js";
import { asObject, readJsonFile } from "./read-json.js";
import {
  INDEX_FILE,
  SINGLE_FILE,
  encodeFromF32,
  listTensors,
  readSafetensorsHeader,
  readShardIndex,
  readTensorBytes,
  readTensorF32,
  writeSafetensorsRaw,
  type RawTensor,
  type TensorInfo,
} from "./safetensors.js";
import { jsonText } from "./tiny-model.js";

/** Weights in other formats: copying them beside merged safetensors would leave stale, unmerged weights. */
const WEIGHT_FILE = /\.(safetensors|bin|pth|pt|ckpt|h5|msgpack|gguf)$|^(model\.safetensors|pytorch_model\.bin)\.index\.json$/;
const EMBED = "model.embed_tokens.weight";
const LM_HEAD = "lm_head.weight";

/** The shape of one merge: W [rows, cols] (out_features × in_features), A [r, cols], B [rows, r]. */
export interface MergeShape {
  /** The base weight's name, e.g. `model.layers.0.self_attn.q_proj.weight` (`lm_head.weight` when untying). */
  name: string;
  rows: number;
  cols: number;
  r: number;
}

/**
 * Computes W + scale·B·A into `w` in place (all f32, row-major). It must sum each element of B·A
 * in f64 over k ascending, skipping zero B values, add it to W in f64 and round once, as
 * {@link mergeRowsF64} does: merged folders are then the same bits whichever kernel made them.
 */
export type MergeKernel = (w: Float32Array, a: Float32Array, b: Float32Array, shape: MergeShape, scale: number) => void | Promise<void>;

/** Options of {@link mergeAdapter}. */
export interface MergeAdapterOptions {
  /** Computes each adapted weight. Default {@link mergeRowsF64}, in JS; @lathe/engine passes its native, threaded one. */
  kernel?: MergeKernel;
}

/**
 * Merges a LoRA adapter into its base model and writes a complete Hugging Face folder to `outDir`:
 * each adapted weight becomes W + scale·B·A (computed in f32 with f64 sums by `options.kernel`,
 * stored in W's dtype), every other tensor is copied byte for byte, the base's sharding is kept,
 * and the other files (config, tokenizer, generation config) are copied; weights in other formats
 * (.bin, .pth, .gguf) are left out. An adapter on `lm_head` of a model with tied embeddings unties
 * them: the merged folder gets its own lm_head.weight and `tie_word_embeddings: false`, the
 * embeddings stay as they were.
 * @throws ModelFormatError naming the adapter tensor whose module the base lacks or whose shape does not fit.
 */
export async function mergeAdapter(baseDir: string, adapterDir: string, outDir: string, options: MergeAdapterOptions = {}): Promise<void> {
  const kernel = options.kernel ?? mergeRowsF64;
  const out = path.resolve(outDir);
  if (out === path.resolve(baseDir) || out === path.resolve(adapterDir)) {
    throw new RangeError(`the merged model must go to a folder of its own, not ${outDir}`);
  }
  const config = await readModelConfig(baseDir);
  const tensors = await listTensors(baseDir);
  const adapter = await readPeftAdapter(adapterDir);
  const adapterFile = path.join(adapterDir, ADAPTER_WEIGHTS_FILE);
  const byName = new Map(tensors.map((t) => [t.name, t]));

  const merges = new Map<string, { pair: LoraPair<TensorInfo>; base: TensorInfo }>();
  let untie = false;
  for (const pair of pairLoraTensors(adapterFile, adapter.tensors, adapter.r)) {
    const weight = `${pair.module}.weight`;
    let base = byName.get(weight);
    if (base === undefined && weight === LM_HEAD && config.tieWordEmbeddings) {
      base = byName.get(EMBED);
      untie = base !== undefined;
    }
    if (base === undefined) {
      throw new ModelFormatError(adapterFile, `tensor \`${pair.a.name}\` adapts \`${weight}\`, which the base model does not have`);
    }
    const [rows, cols] = base.shape;
    if (base.shape.length !== 2 || pair.a.shape[1] !== cols || pair.b.shape[0] !== rows) {
      throw new ModelFormatError(
        adapterFile,
        `tensor \`${pair.a.name}\` [${pair.a.shape.join(", ")}] with \`${pair.b.name}\` [${pair.b.shape.join(", ")}] does not fit ` +
          `\`${base.name}\` [${base.shape.join(", ")}] of the base model (expected A [r, ${cols}], B [${rows}, r])`,
      );
    }
    merges.set(weight, { pair, base });
  }

  const raw = (t: TensorInfo, name = t.name): RawTensor => {
    const merge = merges.get(name);
    return {
      name,
      dtype: t.dtype,
      shape: t.shape,
      bytes: merge === undefined ? () => readTensorBytes(t) : () => mergedBytes(merge.base, merge.pair, adapter.scale, name, kernel),
    };
  };

  await mkdir(out, { recursive: true });
  const embed = byName.get(EMBED);
  if (await exists(path.join(baseDir, SINGLE_FILE))) {
    const file = path.join(baseDir, SINGLE_FILE);
    const entries = tensors.map((t) => raw(t));
    if (untie && embed !== undefined) entries.push(raw(embed, LM_HEAD));
    await writeSafetensorsRaw(path.join(out, SINGLE_FILE), entries, (await readSafetensorsHeader(file)).metadata);
  } else {
    const indexFile = path.join(baseDir, INDEX_FILE);
    const index = asObject(await readJsonFile(indexFile)) ?? {};
    const weightMap: Record<string, string> = {};
    let totalSize = 0;
    for (const shard of (await readShardIndex(indexFile)).keys()) {
      const shardFile = path.join(baseDir, shard);
      const inShard = tensors.filter((t) => t.file === shardFile);
      const entries = inShard.map((t) => raw(t));
      // The untied head goes beside the embeddings it starts from.
      if (untie && embed !== undefined && embed.file === shardFile) entries.push(raw(embed, LM_HEAD));
      for (const e of entries) {
        weightMap[e.name] = shard;
        totalSize += (byName.get(e.name) ?? embed)?.byteLength ?? 0;
      }
      await writeSafetensorsRaw(path.join(out, shard), entries, (await readSafetensorsHeader(shardFile)).metadata);
    }
    const sortedMap = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    const metadata = { ...(asObject(index["metadata"]) ?? {}), total_size: totalSize };
    await writeFile(path.join(out, INDEX_FILE), `${JSON.stringify({ ...index, metadata, weight_map: sortedMap }, null, 2)}\n`);
  }

  for (const entry of await readdir(baseDir, { withFileTypes: true })) {
    if (WEIGHT_FILE.test(entry.name)) continue;
    const from = path.join(baseDir, entry.name);
    // Hugging Face's cache links files to blobs; follow the link, leave folders (e.g. original/) out.
    const isFile = entry.isFile() || (entry.isSymbolicLink() && (await stat(from).then((s) => s.isFile(), () => false)));
    if (!isFile) continue;
    if (untie && entry.name === "config.json") {
      await writeFile(path.join(out, "config.json"), jsonText({ ...config.raw, tie_word_embeddings: false }));
    } else {
      await copyFile(from, path.join(out, entry.name));
    }
  }
}

/** W + scale·B·A in W's dtype, `kernel` doing the arithmetic in f32 (W widened from f16/bf16 exactly). */
async function mergedBytes(base: TensorInfo, pair: LoraPair<TensorInfo>, scale: number, name: string, kernel: MergeKernel): Promise<Uint8Array> {
  const [w, a, b] = await Promise.all([readTensorF32(base), readTensorF32(pair.a), readTensorF32(pair.b)]);
  await kernel(w, a, b, { name, rows: base.shape[0] ?? 0, cols: base.shape[1] ?? 0, r: pair.a.shape[0] ?? 0 }, scale);
  // An f32 weight is written from the merged array itself: encodeFromF32 would copy it (a
  // vocabulary-sized lm_head is gigabytes), and `w` is ours alone.
  return base.dtype === "F32" ? new Uint8Array(w.buffer, w.byteOffset, w.byteLength) : encodeFromF32(w, base.dtype);
}

/** The reference {@link MergeKernel}, in JS: each row of B·A is summed in f64, then added to W and rounded once. */
export function mergeRowsF64(w: Float32Array, a: Float32Array, b: Float32Array, shape: MergeShape, scale: number): void {
  const { rows, cols, r } = shape;
  const row = new Float64Array(cols);
  for (let o = 0; o < rows; o++) {
    row.fill(0);
    for (let k = 0; k < r; k++) {
      const s = b[o * r + k]!;
      if (s === 0) continue;
      const from = k * cols;
      for (let i = 0; i < cols; i++) row[i] = row[i]! + s * a[from + i]!;
    }
    const at = o * cols;
    for (let i = 0; i < cols; i++) w[at + i] = w[at + i]! + scale * row[i]!;
  }
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then((s) => s.isFile(), () => false);
}
