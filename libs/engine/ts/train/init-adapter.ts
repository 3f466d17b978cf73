/**
 * Starting a run from an existing PEFT adapter (ours or PEFT's) instead of PEFT's initialisation,
 * and applying one to a model for evaluation (applyAdapter).
 */
import { LORA_MODULES, readPeftAdapter, readTensorF32, type PeftAdapter, type Recipe } from "@lathe/models";
import { CheckpointError, EngineError } from "../errors.js";
import type { Model } from "../model.js";
import type { LoraModule } from "../native.js";
import type { Resolved } from "./config.js";

/** Reads an adapter to start from, with the module kinds its tensors adapt. */
export async function readInitAdapter(dir: string): Promise<{ adapter: PeftAdapter; modules: LoraModule[] }> {
  let adapter: PeftAdapter;
  try {
    adapter = await readPeftAdapter(dir);
  } catch (err) {
    throw new CheckpointError(`initAdapter ${dir}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return { adapter, modules: adaptedModules(adapter, dir) };
}

export function adaptedModules(adapter: PeftAdapter, dir: string): LoraModule[] {
  const modules = new Set<LoraModule>();
  for (const t of adapter.tensors) {
    const leaf = /\.([a-z_]+)\.lora_[AB]\.weight$/.exec(t.name)?.[1] ?? "";
    if (!(LORA_MODULES as readonly string[]).includes(leaf)) {
      throw new EngineError("UNSUPPORTED", `${dir}: tensor \`${t.name}\` adapts a module the engine cannot (${LORA_MODULES.join(", ")})`);
    }
    modules.add(leaf as LoraModule);
  }
  return LORA_MODULES.filter((m) => modules.has(m));
}

/**
 * `given` with the LoRA settings it leaves out taken from the adapter in `dir` (r, lora_alpha,
 * lora_dropout, use_rslora and the modules its tensors adapt), for a caller that starts from it.
 */
export async function recipeFromAdapter(dir: string, given: Partial<Recipe>): Promise<Partial<Recipe>> {
  const { adapter, modules } = await readInitAdapter(dir);
  return {
    ...given,
    r: given.r ?? adapter.r,
    loraAlpha: given.loraAlpha ?? adapter.loraAlpha,
    loraDropout: given.loraDropout ?? adapter.loraDropout,
    useRslora: given.useRslora ?? adapter.useRslora,
    targetModules: given.targetModules ?? modules,
  };
}

/** The run's LoRA settings must be the adapter's. */
export function checkAdapterSettings(o: Resolved, dir: string, adapter: PeftAdapter, modules: LoraModule[]): void {
  const diffs: string[] = [];
  const same = <K extends "loraR" | "loraAlpha" | "loraDropout" | "useRslora">(key: K, theirs: Resolved[K], peftName: string): void => {
    if (o[key] !== theirs) diffs.push(`${key} ${JSON.stringify(o[key])} but the adapter's ${peftName} is ${JSON.stringify(theirs)}`);
  };
  same("loraR", adapter.r, "r");
  same("loraAlpha", adapter.loraAlpha, "lora_alpha");
  same("loraDropout", adapter.loraDropout, "lora_dropout");
  same("useRslora", adapter.useRslora, "use_rslora");
  const mine = [...o.targetModules].sort();
  if (JSON.stringify(mine) !== JSON.stringify([...modules].sort())) diffs.push(`targetModules ${mine.join(",")} but the adapter adapts ${modules.join(",")}`);
  if (diffs.length > 0) throw new CheckpointError(`initAdapter ${dir}: settings do not match: ${diffs.join("; ")}`);
}

/**
 * Loads a PEFT adapter's weights into `model` (loraInit with its settings, then loraSet), for
 * evaluation: evalLoss and hiddenStates.
 * @throws EngineError INVALID_ARGUMENT for a tensor that matches no layer of the model.
 */
export async function applyAdapter(model: Model, dir: string): Promise<void> {
  const adapter = await readPeftAdapter(dir);
  model.loraInit({ r: adapter.r, alpha: adapter.loraAlpha, dropout: adapter.loraDropout, useRslora: adapter.useRslora, targetModules: adaptedModules(adapter, dir) });
  const expected = new Set(model.loraShapes().keys());
  for (const t of adapter.tensors) {
    const name = t.name.replace(/^base_model\.model\./, "");
    if (!expected.delete(name)) throw new EngineError("INVALID_ARGUMENT", `${dir}: tensor \`${t.name}\` does not match a layer of the model`);
    model.loraSet(name, await readTensorF32(t));
  }
  // A module adapted in some layers only (layers_to_transform) leaves the rest at PEFT's init: B = 0, no effect.
}

/** Sets every LoRA tensor from a PEFT adapter folder; each must match one of the model's. */
export async function loadAdapterTensors(model: Model, dir: string, known?: PeftAdapter): Promise<void> {
  const adapter = known ?? (await readPeftAdapter(dir));
  const shapes = model.loraShapes();
  for (const t of adapter.tensors) {
    const name = t.name.replace(/^base_model\.model\./, "");
    const shape = shapes.get(name);
    if (shape === undefined) throw new CheckpointError(`${dir}: tensor \`${t.name}\` does not match a LoRA tensor of this run`);
    if (t.shape.join(",") !== shape.join(",")) throw new CheckpointError(`${dir}: tensor \`${t.name}\` is [${t.shape.join(", ")}], expected [${shape.join(", ")}]`);
    model.loraSet(name, await readTensorF32(t));
  }
}
