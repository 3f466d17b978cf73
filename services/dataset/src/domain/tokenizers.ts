import { isAbsolute } from "node:path";
import { Metadata } from "@grpc/grpc-js";
import { AppError, call, createClient, invalidArgument, type CallContext } from "@lathe/kit";
import { loadTokenizer, ModelFormatError, type ModelTokenizer } from "@lathe/models";
import { RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";

/**
 * Tokenizers for token statistics, by `tokenizer_model`: a registry model (`models/{id}`, whose
 * folder the registry knows; asked on the caller's behalf) or the path of a model folder.
 * Loaded tokenizers are kept, since every upload for a base model uses the same one.
 */
export class Tokenizers {
  private readonly cache = new Map<string, Promise<ModelTokenizer>>();

  constructor(private readonly registryAddress: () => string) {}

  async resolve(field: string, model: string, ctx: CallContext): Promise<ModelTokenizer | undefined> {
    if (model === "") return undefined;
    let dir: string;
    if (model.startsWith("models/")) {
      const client = createClient(RegistryServiceClient, this.registryAddress(), { deadlineMs: 10_000 });
      try {
        // The registry is asked on the caller's behalf, with the caller's key.
        const auth = ctx.metadata.get("authorization")[0];
        const md = new Metadata();
        if (typeof auth === "string") md.set("authorization", auth);
        const { model: m } = await call(client, "getModel", { name: model }, md).catch((err: unknown) => {
          if (err instanceof AppError && err.code === "NOT_FOUND") throw invalidArgument(field, `${model} is not a registered model`);
          throw err;
        });
        dir = m!.sourceUri;
      } finally {
        client.close();
      }
    } else if (isAbsolute(model)) {
      dir = model;
    } else {
      throw invalidArgument(field, `must be a registered model (models/{id}) or the absolute path of a model folder, got ${JSON.stringify(model)}`);
    }
    let loading = this.cache.get(dir);
    if (!loading) {
      loading = loadTokenizer(dir);
      this.cache.set(dir, loading);
      loading.catch(() => this.cache.delete(dir));
    }
    try {
      return await loading;
    } catch (err) {
      if (err instanceof ModelFormatError) throw invalidArgument(field, `the tokenizer of ${model} cannot be loaded: ${err.message}`);
      throw err;
    }
  }
}
