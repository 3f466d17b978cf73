import type { Metadata } from "@grpc/grpc-js";
import { AppError, call, createClient } from "@lathe/kit";
import { Model_State, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import type { DeploymentSpec, ServedState } from "../db/migrations.js";
import { badRequest, modelNotFound } from "./errors.js";
import { DEFAULT_CONTEXT_LENGTH } from "./spec.js";
import { openAiName, parseModelName, registryNames } from "./model-name.js";

/** Where a deployment's answers are computed, as a request to it needs to know. */
export type ServingRoute =
  | { backend: "embedded"; deployment: string; tenant: string }
  | { backend: "upstream"; deployment: string; tenant: string; baseUrl: string; apiKeySecret: string; upstreamModel: string };

/** What a model name stands for now: a base model's files and, for an adapter, one version's. */
export interface ResolvedModel {
  /** The name the caller sent. */
  id: string;
  /** `models/{model}`. */
  model: string;
  /** The base model's folder digest, `sha256:…`. */
  baseDigest: string;
  /** The base model's context length. */
  contextLength: number;
  /** An adapter version, and the fingerprint of the chat template it was trained with ("" when not recorded). */
  adapter?: { version: string; digest: string; chatTemplateFingerprint: string };
  /** The deployment that serves it and how; none: the embedded backend serves it on demand. */
  route?: ServingRoute;
  /** Tokens per sequence the deployment allocates; none: the gateway's default. */
  contextSize?: number;
}

/** One entry of `GET /v1/models`. */
export interface ListedModel {
  id: string;
  created: number;
  owned_by: string;
  /** The base model of an adapter. */
  parent?: string;
}

const notFound = (err: unknown): boolean => err instanceof AppError && err.code === "NOT_FOUND";

/**
 * Resolves model names through the registry with the caller's credentials, at request time (so
 * moving an alias moves traffic, and a key finds only its tenant's models: another tenant's are
 * NOT_FOUND there, 404 here).
 */
export class RegistryModels {
  /** One client, kept open: a channel made per request cost a chat several milliseconds before its first token (bench/gateway). */
  private client: { address: string; client: RegistryServiceClient } | undefined;

  constructor(private readonly address: () => string) {}

  private async withClient<T>(f: (c: RegistryServiceClient) => Promise<T>): Promise<T> {
    const address = this.address();
    if (this.client?.address !== address) {
      this.client?.client.close();
      this.client = { address, client: createClient(RegistryServiceClient, address, { deadlineMs: 30_000 }) };
    }
    return f(this.client.client);
  }

  /** Closes the kept client. */
  close(): void {
    this.client?.client.close();
    this.client = undefined;
  }

  async resolve(id: string, md: Metadata): Promise<ResolvedModel> {
    const parsed = parseModelName(id);
    if (parsed === undefined) throw modelNotFound(id);
    const names = registryNames(parsed);
    return this.withClient(async (c) => {
      const ask = async <T>(p: Promise<T>): Promise<T> =>
        p.catch((err: unknown) => {
          throw notFound(err) ? modelNotFound(id) : err;
        });
      const { model } = await ask(call(c, "getModel", { name: names.model }, md));
      if (!model) throw modelNotFound(id);
      if (model.state !== Model_State.STATE_READY || model.artifactDigest === "") {
        throw new AppError("FAILED_PRECONDITION", "MODEL_NOT_READY", `The model \`${id}\` is not ready: its files are not imported yet.`);
      }
      const resolved: ResolvedModel = { id, model: model.name, baseDigest: model.artifactDigest, contextLength: model.contextLength };
      if (names.adapter === undefined) return resolved;
      let versionName = names.version;
      if (names.alias !== undefined) {
        versionName = (await ask(call(c, "getAlias", { name: names.alias }, md))).alias?.adapterVersion;
      } else if (versionName === undefined) {
        const { adapter } = await ask(call(c, "getAdapter", { name: names.adapter }, md));
        versionName = adapter?.latestVersion;
      }
      if (!versionName) throw modelNotFound(id);
      const { adapterVersion: v } = await ask(call(c, "getAdapterVersion", { name: versionName }, md));
      if (!v || v.artifactDigest === "") throw modelNotFound(id);
      if (v.baseModelDigest !== "" && v.baseModelDigest !== model.artifactDigest) {
        throw badRequest(`The adapter version ${v.name} was trained on base model files ${v.baseModelDigest}, not on ${model.name}'s ${model.artifactDigest}.`, "model", "adapter_base_mismatch");
      }
      return { ...resolved, adapter: { version: v.name, digest: v.artifactDigest, chatTemplateFingerprint: v.chatTemplateFingerprint } };
    });
  }

  /**
   * A deployment's spec resolved now: the base model ready, each adapter source (alias or
   * version) to its version and files, trained on this base's files and with its chat template,
   * the context within the model's. Errors name the spec's field (`deployment.adapters[1].source`).
   */
  async resolveSpec(spec: DeploymentSpec, md: Metadata, prefix = "deployment."): Promise<ServedState> {
    return this.withClient(async (c) => {
      const field = (f: string) => `${prefix}${f}`;
      const ask = async <T>(p: Promise<T>, f: string, what: string): Promise<T> =>
        p.catch((err: unknown) => {
          throw notFound(err) ? new AppError("NOT_FOUND", "NOT_FOUND", `${what} does not exist`, { field: field(f) }) : err;
        });
      const { model } = await ask(call(c, "getModel", { name: spec.baseModel }, md), "base_model", spec.baseModel);
      if (!model || model.state !== Model_State.STATE_READY || model.artifactDigest === "") {
        throw new AppError("FAILED_PRECONDITION", "MODEL_NOT_READY", `${spec.baseModel} is not ready: its files are not imported yet`, { field: field("base_model") });
      }
      if (model.contextLength > 0 && spec.contextLength > model.contextLength) {
        throw new AppError("INVALID_ARGUMENT", "INVALID_FIELD", `${field("context_length")}: ${spec.contextLength} tokens is more than ${spec.baseModel}'s context length, ${model.contextLength}`, { field: field("context_length") });
      }
      // The default is 4096 tokens, or the model's context when it is shorter.
      const contextLength = spec.contextLength || Math.min(DEFAULT_CONTEXT_LENGTH, model.contextLength > 0 ? model.contextLength : DEFAULT_CONTEXT_LENGTH);
      const adapters: ServedState["adapters"] = [];
      for (const [i, a] of spec.adapters.entries()) {
        const f = `adapters[${i}].source`;
        let versionName = a.source;
        if (a.source.includes("/aliases/")) versionName = (await ask(call(c, "getAlias", { name: a.source }, md), f, a.source)).alias?.adapterVersion ?? "";
        if (versionName === "") throw new AppError("NOT_FOUND", "NOT_FOUND", `${a.source} points at no version yet`, { field: field(f) });
        const { adapterVersion: v } = await ask(call(c, "getAdapterVersion", { name: versionName }, md), f, versionName);
        if (!v || v.artifactDigest === "") throw new AppError("NOT_FOUND", "NOT_FOUND", `${versionName} does not exist`, { field: field(f) });
        if (v.baseModelDigest !== "" && v.baseModelDigest !== model.artifactDigest) {
          throw new AppError("FAILED_PRECONDITION", "ADAPTER_BASE_MISMATCH", `${v.name} was trained on base model files ${v.baseModelDigest}, not on ${model.name}'s ${model.artifactDigest}`, { field: field(f) });
        }
        if (v.chatTemplateFingerprint !== "" && v.chatTemplateFingerprint !== model.chatTemplateFingerprint) {
          throw new AppError(
            "FAILED_PRECONDITION",
            "CHAT_TEMPLATE_MISMATCH",
            `${v.name} was trained with another chat template (${v.chatTemplateFingerprint}) than ${model.name}'s (${model.chatTemplateFingerprint || "none"}), which this deployment would apply; ` +
              "its answers would be garbled. Serve it over a base model with the template it was trained with, or register it again with that template",
            { field: field(f) },
          );
        }
        adapters.push({ servedName: a.servedName, source: a.source, version: v.name, digest: v.artifactDigest, rank: v.loraConfig?.r ?? 0, chatTemplateFingerprint: v.chatTemplateFingerprint });
      }
      return { baseDigest: model.artifactDigest, contextLength, adapters };
    });
  }

  /** The caller's servable models: each ready base, each adapter with a version (its latest), each alias. */
  async list(md: Metadata, tenant: string): Promise<ListedModel[]> {
    return this.withClient(async (c) => {
      const out: ListedModel[] = [];
      const created = (t: Date | undefined) => Math.floor((t?.getTime() ?? 0) / 1000);
      for await (const model of pages((pageToken) => call(c, "listModels", { pageSize: 1000, pageToken }, md).then((r) => [r.models, r.nextPageToken] as const))) {
        if (model.state !== Model_State.STATE_READY) continue;
        const base = openAiName(model.name);
        out.push({ id: base, created: created(model.createTime), owned_by: tenant });
        for await (const adapter of pages((pageToken) => call(c, "listAdapters", { parent: model.name, pageSize: 1000, pageToken, filter: "" }, md).then((r) => [r.adapters, r.nextPageToken] as const))) {
          if (adapter.latestVersion === "") continue;
          out.push({ id: openAiName(model.name, adapter.name), created: created(adapter.createTime), owned_by: tenant, parent: base });
          for await (const alias of pages((pageToken) => call(c, "listAliases", { parent: adapter.name, pageSize: 1000, pageToken }, md).then((r) => [r.aliases, r.nextPageToken] as const))) {
            out.push({ id: openAiName(model.name, adapter.name, alias.name), created: created(alias.createTime), owned_by: tenant, parent: base });
          }
        }
      }
      return out;
    });
  }
}

async function* pages<T>(page: (token: string) => Promise<readonly [T[], string]>): AsyncGenerator<T> {
  let token = "";
  do {
    const [items, next] = await page(token);
    yield* items;
    token = next;
  } while (token !== "");
}
