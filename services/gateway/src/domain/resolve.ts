import type { Metadata } from "@grpc/grpc-js";
import type { DeploymentRow, DeploymentStore } from "./deployments.js";
import { OpenAiError, modelNotFound } from "./errors.js";
import { parseModelName } from "./model-name.js";
import type { ListedModel, RegistryModels, ResolvedModel, ServingRoute } from "./registry.js";
import { upstreamLoraName } from "./rollout.js";

/**
 * What a model name of a request stands for. A name whose base part is a deployment's served
 * model name goes to that deployment: its base model, its served adapters by served name (the
 * versions its last rollout serves), and, on the embedded backend, any other adapter of its base
 * model through the registry. Any other name is a registry model served on demand by the
 * embedded backend, resolved at request time.
 */
export class ModelResolver {
  constructor(
    private readonly deployments: DeploymentStore,
    private readonly registry: RegistryModels,
  ) {}

  async resolve(id: string, md: Metadata, tenant: string): Promise<ResolvedModel> {
    const parsed = parseModelName(id);
    if (parsed === undefined) throw modelNotFound(id);
    const d = await this.deployments.byServedName(tenant, parsed.base);
    if (!d) return this.registry.resolve(id, md);
    const route = routeOf(d);
    if (d.rolled_out === 0 && (d.state === "FAILED" || route.backend === "upstream")) {
      const why = d.state === "FAILED" ? `it failed: ${d.error?.message ?? "see GetDeployment"}` : "it is still being created";
      throw new OpenAiError(503, "server_error", `The deployment serving \`${parsed.base}\` is not ready: ${why}.`, "deployment_not_ready", "model");
    }
    const base = { id, model: d.spec.baseModel, baseDigest: d.served.baseDigest, contextLength: d.served.contextLength, contextSize: d.served.contextLength };
    const modelId = d.spec.baseModel.replace(/^models\//, "");
    if (parsed.adapter === undefined) {
      return { ...base, route: route.backend === "upstream" ? { ...route, upstreamModel: d.spec.upstreamModel || modelId } : route };
    }
    const served = parsed.version === undefined && parsed.alias === undefined ? d.served.adapters.find((a) => a.servedName === parsed.adapter) : undefined;
    if (served) {
      return {
        ...base,
        adapter: { version: served.version, digest: served.digest, chatTemplateFingerprint: served.chatTemplateFingerprint },
        route: route.backend === "upstream" ? { ...route, upstreamModel: upstreamLoraName(d, served) } : route,
      };
    }
    // An upstream serves only what its deployment loaded into it.
    if (route.backend === "upstream") throw modelNotFound(id);
    const viaRegistry = await this.registry.resolve(`${modelId}${id.slice(parsed.base.length)}`, md);
    return { ...viaRegistry, id, route, contextSize: d.served.contextLength };
  }

  /** The caller's models: each deployment's served names, then every registry model served on demand. */
  async list(md: Metadata, tenant: string): Promise<ListedModel[]> {
    const out: ListedModel[] = [];
    const seen = new Set<string>();
    const add = (m: ListedModel) => {
      if (seen.has(m.id)) return;
      seen.add(m.id);
      out.push(m);
    };
    for (const d of await this.deployments.all(tenant)) {
      const created = Math.floor(d.create_time.getTime() / 1000);
      add({ id: d.spec.servedModelName, created, owned_by: tenant });
      for (const a of d.served.adapters) add({ id: `${d.spec.servedModelName}:${a.servedName}`, created, owned_by: tenant, parent: d.spec.servedModelName });
    }
    for (const m of await this.registry.list(md, tenant)) add(m);
    return out;
  }
}

function routeOf(d: DeploymentRow): ServingRoute {
  const deployment = `deployments/${d.deployment_id}`;
  if (d.spec.backend === "embedded") return { backend: "embedded", deployment, tenant: d.tenant };
  return { backend: "upstream", deployment, tenant: d.tenant, baseUrl: d.spec.upstreamBaseUrl, apiKeySecret: d.spec.upstreamApiKeySecret, upstreamModel: "" };
}
