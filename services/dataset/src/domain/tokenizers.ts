import { randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { AppError, call, callerMetadata, createClient, invalidArgument, prefixedDigest, readFolderManifest, resolveImportPath, type ArtifactStore, type CallContext, type ImportRoots, type Logger } from "@lathe/kit";
import { loadTokenizer, ModelFormatError, type ModelTokenizer } from "@lathe/models";
import { RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { diskFull } from "./faults.js";

/**
 * The files of a model folder that `loadTokenizer` (libs/models) reads, or may read in a later
 * version: the weights never leave the store for token statistics.
 */
const tokenizerFiles = new Set(["tokenizer.json", "tokenizer_config.json", "config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json"]);

export interface TokenizerSources {
  /** Where the registry answers (asked on the caller's behalf, with the caller's key). */
  registryAddress: () => string;
  /** The shared artifact store, which holds every registered model's files by digest. */
  artifacts: ArtifactStore;
  /** The only server folders a caller may name (LATHE_IMPORT_ROOTS). */
  importRoots: ImportRoots;
  /** A folder of the service's own state where registered tokenizers are written out, one folder per digest. */
  cacheDir: string;
  logger: Logger;
}

/**
 * Tokenizers for token statistics, by `tokenizer_model`: a registered model (`models/{id}`), read
 * from the copy the registry stored (its folder digest in the artifact store; the folder it was
 * imported from may be gone or changed since), or the path of a model folder inside the
 * operator's import roots. Any other server path is PERMISSION_DENIED, whether it exists or not,
 * so no tenant reads the server's disk or another tenant's files through it. Loaded tokenizers
 * are kept (by digest, or by real path), since every upload for a base model uses the same one.
 */
export class Tokenizers {
  private readonly cache = new Map<string, Promise<ModelTokenizer>>();

  constructor(private readonly sources: TokenizerSources) {}

  async resolve(field: string, model: string, ctx: CallContext): Promise<ModelTokenizer | undefined> {
    if (model === "") return undefined;
    let key: string;
    let load: () => Promise<ModelTokenizer>;
    // Where the files were read from, as the caller may be told it.
    let shown: { dir: string; as: string } | undefined;
    if (model.startsWith("models/")) {
      const client = createClient(RegistryServiceClient, this.sources.registryAddress(), { deadlineMs: 10_000 });
      try {
        // The registry is asked on the caller's behalf, with the caller's key.
        const { model: m } = await call(client, "getModel", { name: model }, callerMetadata(ctx)).catch((err: unknown) => {
          if (err instanceof AppError && err.code === "NOT_FOUND") throw invalidArgument(field, `${model} is not a registered model`);
          throw err;
        });
        const digest = /^sha256:([0-9a-f]{64})$/.exec(m!.artifactDigest)?.[1];
        if (digest === undefined) throw invalidArgument(field, `${model} has no stored files yet, so its tokenizer cannot be read`);
        const dir = join(this.sources.cacheDir, digest);
        key = prefixedDigest(digest);
        load = () => this.fromStore(digest, dir);
        shown = { dir, as: model };
      } finally {
        client.close();
      }
    } else if (isAbsolute(model)) {
      const dir = await resolveImportPath(this.sources.importRoots, field, model);
      key = `path:${dir}`;
      load = () => loadTokenizer(dir);
    } else {
      throw invalidArgument(field, `must be a registered model (models/{id}) or the absolute path of a model folder, got ${JSON.stringify(model)}`);
    }
    let loading = this.cache.get(key);
    if (!loading) {
      loading = load();
      this.cache.set(key, loading);
      loading.catch(() => this.cache.delete(key));
    }
    try {
      return await loading;
    } catch (err) {
      if (err instanceof ModelFormatError) {
        // The cache folder is the server's own business: the caller named the model.
        const message = shown ? err.message.split(shown.dir).join(shown.as) : err.message;
        throw invalidArgument(field, `the tokenizer of ${model} cannot be loaded: ${message}`);
      }
      throw diskFull(err, this.sources.logger);
    }
  }

  /** The tokenizer of a stored model folder, its tokenizer files written out once to `dir`. */
  private async fromStore(digest: string, dir: string): Promise<ModelTokenizer> {
    const present = await stat(dir).then((s) => s.isDirectory(), () => false);
    if (!present) {
      const { artifacts } = this.sources;
      const files = (await readFolderManifest(artifacts, digest)).filter((f) => tokenizerFiles.has(f.path));
      // Written beside and renamed into place, so a folder that exists is complete.
      const tmp = `${dir}.tmp-${randomUUID()}`;
      try {
        await mkdir(tmp, { recursive: true });
        for (const f of files) await pipeline(await artifacts.get(f.digest), createWriteStream(join(tmp, f.path)));
        await rename(tmp, dir).catch(async (err: unknown) => {
          // Another call wrote the same folder first: its copy is as good.
          if (!(await stat(dir).then((s) => s.isDirectory(), () => false))) throw err;
        });
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    }
    return loadTokenizer(dir);
  }
}
