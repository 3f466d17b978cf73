import type { Metadata } from "@grpc/grpc-js";
import { OpenAiError, modelNotFound } from "./errors.js";
import type { OpenAiFineTuning } from "./openai-fine-tuning.js";
import type { ListedModel, ResolvedModel } from "./registry.js";
import type { ModelResolver } from "./resolve.js";

/** What the HTTP API asks of model names. */
export type Models = Pick<ModelResolver, "resolve" | "list">;

/**
 * Model names with OpenAI's fine-tuned names besides: `ft:BASE:TENANT:SUFFIX:ID` stands for the
 * adapter version the registry made from that job (`BASE:ftjob-ID@N`), servable once the job
 * succeeded; every other name is resolved as before.
 */
export class FineTunedModels implements Models {
  constructor(
    private readonly inner: Models,
    private readonly fineTuning: OpenAiFineTuning,
  ) {}

  async resolve(id: string, md: Metadata, tenant: string): Promise<ResolvedModel> {
    if (!id.startsWith("ft:")) return this.inner.resolve(id, md, tenant);
    const found = await this.fineTuning.registryNameOf(tenant, id);
    if (!found) throw modelNotFound(id);
    if (found.registryName === undefined) {
      throw new OpenAiError(404, "invalid_request_error", `The model \`${id}\` does not exist yet: fine-tuning job ${found.job} has not succeeded.`, "model_not_found", "model");
    }
    return { ...(await this.inner.resolve(found.registryName, md, tenant)), id };
  }

  async list(md: Metadata, tenant: string): Promise<ListedModel[]> {
    const models = await this.inner.list(md, tenant);
    for (const m of await this.fineTuning.servable(tenant)) models.push({ id: m.id, created: m.created, owned_by: tenant, parent: m.parent });
    return models;
  }
}
