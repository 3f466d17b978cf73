import { mkdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { AppError, cachedFolder, digestHex, type ArtifactStore } from "@lathe/kit";
import { exportGguf, exportGgufLora, ModelFormatError } from "@lathe/models";

/**
 * The files llama.cpp serves, made from the artifact store by digest and cached under `cacheDir`:
 * a base model's HF folder and its GGUF export, an adapter's PEFT folder and its GGUF LoRA export.
 * Content-addressed, so a file is made once and never changes (node-llama-cpp caches adapters by path).
 */
export class ServingFiles {
  private readonly making = new Map<string, Promise<string>>();

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
    return this.once(file, async (out) => exportGguf(await this.modelFolder(digest), out, { dtype: this.ggufType }));
  }

  /** An adapter as a GGUF LoRA file for its base. */
  loraGguf(baseDigest: string, adapterDigest: string): Promise<string> {
    const file = join(this.cacheDir, "gguf-lora", `${digestHex(adapterDigest)}-${digestHex(baseDigest)}.gguf`);
    return this.once(file, async (out) => {
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

  /** `file`, made by `make` (into a temporary name, then renamed) unless it exists; one maker per file at a time. */
  private once(file: string, make: (out: string) => Promise<void>): Promise<string> {
    let pending = this.making.get(file);
    if (!pending) {
      pending = (async () => {
        if (await stat(file).then((s) => s.isFile(), () => false)) return file;
        await mkdir(dirname(file), { recursive: true });
        const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
        try {
          await make(tmp);
          await rename(tmp, file);
        } catch (err) {
          await rm(tmp, { force: true });
          throw err;
        }
        return file;
      })().finally(() => this.making.delete(file));
      this.making.set(file, pending);
    }
    return pending;
  }
}
