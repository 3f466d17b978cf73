import { join } from "node:path";
import { AppError, cachedFile, cachedFolder, digestHex, type ArtifactStore } from "@lathe/kit";
import { exportGguf, exportGgufLora, ModelFormatError } from "@lathe/models";

/**
 * The files llama.cpp serves, made from the artifact store by digest and cached under `cacheDir`:
 * a base model's HF folder and its GGUF export, an adapter's PEFT folder and its GGUF LoRA export.
 * Content-addressed, so a file is made once and never changes (node-llama-cpp caches adapters by path).
 */
export class ServingFiles {
  constructor(
    private readonly artifacts: ArtifactStore,
    private readonly cacheDir: string,
    private readonly ggufType: "F16" | "F32",
  ) {}

  /** The base model's Hugging Face folder. */
  modelFolder(digest: string): Promise<string> {
    return cachedFolder(this.artifacts, digestHex(digest), join(this.cacheDir, "folders"));
  }

  /** The base model as one GGUF file. */
  baseGguf(digest: string): Promise<string> {
    const file = join(this.cacheDir, "gguf", `${digestHex(digest)}-${this.ggufType}.gguf`);
    return cachedFile(file, async (out) => exportGguf(await this.modelFolder(digest), out, { dtype: this.ggufType }));
  }

  /** An adapter as a GGUF LoRA file for its base. */
  loraGguf(baseDigest: string, adapterDigest: string): Promise<string> {
    const file = join(this.cacheDir, "gguf-lora", `${digestHex(adapterDigest)}-${digestHex(baseDigest)}.gguf`);
    return cachedFile(file, async (out) => {
      const base = await this.modelFolder(baseDigest);
      const adapter = await cachedFolder(this.artifacts, digestHex(adapterDigest), join(this.cacheDir, "folders"));
      try {
        await exportGgufLora(adapter, base, out, { dtype: this.ggufType });
      } catch (err) {
        if (!(err instanceof ModelFormatError)) throw err;
        throw new AppError("FAILED_PRECONDITION", "GGUF_LORA_UNSUPPORTED", `this adapter cannot be served over its base: ${err.message.split(`${adapter}/`).join("").split(`${base}/`).join("base model ")}`);
      }
    });
  }
}
