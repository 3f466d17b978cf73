import { createHash } from "node:crypto";
import { canonicalJson, checkLabels, checkSecretRef, checkText, invalidArgument, parseName } from "@lathe/kit";
import { DeploymentBackend, type Deployment } from "@lathe/proto/lathe/gateway/v1/gateway_service";
import type { BackendKind, DeploymentSpec, SpecAdapter } from "../db/migrations.js";

/** A served name: what clients put in the OpenAI `model`, before or after its colon. */
export const servedNamePattern = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** A deployment id: lowercase letters, digits and `-`, starting with a letter. */
const deploymentIdPattern = /^[a-z][a-z0-9-]{0,62}$/;
const ADAPTER_SOURCE = /^models\/([a-z0-9][a-z0-9._-]{0,62})\/adapters\/([a-z0-9][a-z0-9._-]{0,62})\/(aliases\/[a-z][a-z0-9._-]{0,62}|versions\/[1-9][0-9]{0,8})$/;

/** The most adapters one deployment serves. */
export const MAX_ADAPTERS = 64;
/** Tokens each instance allocates when a deployment does not say. */
export const DEFAULT_CONTEXT_LENGTH = 4096;

export const backendNames: Record<BackendKind, DeploymentBackend> = {
  embedded: DeploymentBackend.DEPLOYMENT_BACKEND_EMBEDDED_LLAMA_CPP,
  upstream: DeploymentBackend.DEPLOYMENT_BACKEND_UPSTREAM_OPENAI,
};

/** The fields UpdateDeployment may change, by their proto names. */
export const updatableFields = ["display_name", "labels", "served_model_name", "adapters", "backend", "upstream_base_url", "upstream_api_key_secret", "upstream_model", "replicas", "context_length"] as const;

export function checkDeploymentId(field: string, id: string): string {
  if (id === "") throw invalidArgument(field, "is required");
  if (!deploymentIdPattern.test(id)) throw invalidArgument(field, `${JSON.stringify(id.slice(0, 80))} must be 1 to 63 characters of lowercase letters, digits and '-', starting with a letter`);
  return id;
}

/** The id of `deployments/{deployment}`. */
export const parseDeploymentName = (field: string, name: string): string => checkDeploymentId(field, parseName(field, name, "deployments"));

/** The model and adapter ids of an adapter source (an alias or a version name). */
export function parseAdapterSource(field: string, source: string): { modelId: string; adapterId: string } {
  if (source === "") throw invalidArgument(field, "is required");
  const m = ADAPTER_SOURCE.exec(source);
  if (!m) throw invalidArgument(field, `${JSON.stringify(source.slice(0, 160))} must be an alias, models/{model}/adapters/{adapter}/aliases/{alias}, or a version, models/{model}/adapters/{adapter}/versions/{n}`);
  return { modelId: m[1]!, adapterId: m[2]! };
}

/**
 * The spec of a Deployment as the caller wrote it, every field checked and defaults applied
 * (served names from the ids, the embedded backend, one replica, 4096 tokens). `prefix` is the
 * path of the message in the request, for the field an error names.
 */
export function specOf(d: Deployment | undefined, prefix = "deployment."): DeploymentSpec {
  if (!d) throw invalidArgument(prefix.slice(0, -1), "is required");
  const f = (name: string) => `${prefix}${name}`;
  const modelId = parseName(f("base_model"), d.baseModel, "models");
  const servedModelName = d.servedModelName === "" ? modelId : d.servedModelName;
  if (!servedNamePattern.test(servedModelName)) throw invalidArgument(f("served_model_name"), `${JSON.stringify(servedModelName.slice(0, 80))} must be 1 to 63 characters of lowercase letters, digits, '-', '.' and '_'`);
  if (d.adapters.length > MAX_ADAPTERS) throw invalidArgument(f("adapters"), `has ${d.adapters.length} adapters; the limit is ${MAX_ADAPTERS}`);
  const adapters: SpecAdapter[] = [];
  const seen = new Map<string, number>();
  for (const [i, a] of d.adapters.entries()) {
    const src = parseAdapterSource(f(`adapters[${i}].source`), a.source);
    if (src.modelId !== modelId) throw invalidArgument(f(`adapters[${i}].source`), `${a.source} is an adapter of models/${src.modelId}, not of the deployment's base model ${d.baseModel}`);
    const servedName = a.servedName === "" ? src.adapterId : a.servedName;
    if (!servedNamePattern.test(servedName)) throw invalidArgument(f(`adapters[${i}].served_name`), `${JSON.stringify(servedName.slice(0, 80))} must be 1 to 63 characters of lowercase letters, digits, '-', '.' and '_'`);
    const earlier = seen.get(servedName);
    if (earlier !== undefined) throw invalidArgument(f(`adapters[${i}].served_name`), `${servedName} is also the served name of adapters[${earlier}]; give one of them another served_name`);
    seen.set(servedName, i);
    adapters.push({ source: a.source, servedName });
  }
  const backend: BackendKind | undefined =
    d.backend === DeploymentBackend.DEPLOYMENT_BACKEND_UNSPECIFIED || d.backend === DeploymentBackend.DEPLOYMENT_BACKEND_EMBEDDED_LLAMA_CPP ? "embedded" : d.backend === DeploymentBackend.DEPLOYMENT_BACKEND_UPSTREAM_OPENAI ? "upstream" : undefined;
  if (backend === undefined) throw invalidArgument(f("backend"), `${d.backend} is not a DeploymentBackend`);
  let upstreamBaseUrl = "";
  if (backend === "upstream") {
    if (d.upstreamBaseUrl === "") throw invalidArgument(f("upstream_base_url"), "is required for the upstream backend (for example http://vllm:8000/v1)");
    let url: URL;
    try {
      url = new URL(d.upstreamBaseUrl);
    } catch {
      throw invalidArgument(f("upstream_base_url"), `${JSON.stringify(d.upstreamBaseUrl.slice(0, 200))} is not a URL`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") throw invalidArgument(f("upstream_base_url"), `must be an http or https URL, not ${url.protocol}`);
    if (url.username !== "" || url.password !== "") throw invalidArgument(f("upstream_base_url"), "must not hold credentials; name the key in upstream_api_key_secret");
    if (url.search !== "" || url.hash !== "") throw invalidArgument(f("upstream_base_url"), "must have no query or fragment");
    upstreamBaseUrl = url.toString().replace(/\/+$/, "");
  }
  checkSecretRef(f("upstream_api_key_secret"), d.upstreamApiKeySecret);
  checkText(f("upstream_model"), d.upstreamModel, 256);
  if (d.replicas < 0 || d.replicas > 64) throw invalidArgument(f("replicas"), `is ${d.replicas}; it must be from 1 to 64 (0 for the default, 1)`);
  const replicas = d.replicas === 0 ? 1 : d.replicas;
  if (backend === "embedded" && replicas !== 1) {
    throw invalidArgument(f("replicas"), "the embedded backend serves one instance per gateway process; run more gateway replicas to scale it");
  }
  if (d.contextLength !== 0 && (d.contextLength < 16 || d.contextLength > 1_048_576)) throw invalidArgument(f("context_length"), `is ${d.contextLength}; it must be from 16 to 1048576 tokens (0 for the default, ${DEFAULT_CONTEXT_LENGTH})`);
  return {
    displayName: checkText(f("display_name"), d.displayName, 200),
    labels: checkLabels(f("labels"), d.labels),
    baseModel: d.baseModel,
    servedModelName,
    adapters,
    backend,
    upstreamBaseUrl,
    upstreamApiKeySecret: d.upstreamApiKeySecret,
    upstreamModel: d.upstreamModel,
    replicas,
    contextLength: d.contextLength,
  };
}

/** The Deployment fields of a spec (for merging an update over it). */
export function deploymentOfSpec(s: DeploymentSpec): Partial<Deployment> {
  return {
    displayName: s.displayName,
    labels: s.labels,
    baseModel: s.baseModel,
    servedModelName: s.servedModelName,
    adapters: s.adapters.map((a) => ({ source: a.source, servedName: a.servedName, adapterVersion: "" })),
    backend: backendNames[s.backend],
    upstreamBaseUrl: s.upstreamBaseUrl,
    upstreamApiKeySecret: s.upstreamApiKeySecret,
    upstreamModel: s.upstreamModel,
    replicas: s.replicas,
    contextLength: s.contextLength,
  };
}

const protoField: Record<(typeof updatableFields)[number], keyof Deployment> = {
  display_name: "displayName",
  labels: "labels",
  served_model_name: "servedModelName",
  adapters: "adapters",
  backend: "backend",
  upstream_base_url: "upstreamBaseUrl",
  upstream_api_key_secret: "upstreamApiKeySecret",
  upstream_model: "upstreamModel",
  replicas: "replicas",
  context_length: "contextLength",
};

/**
 * The spec after an update: the fields of `mask` (every updatable one when empty) taken from
 * `d`, the rest kept, and the result checked as a whole. A field outside the list, or
 * `base_model` changed, is INVALID_ARGUMENT on `update_mask`.
 */
export function updatedSpec(current: DeploymentSpec, d: Deployment, mask: readonly string[]): DeploymentSpec {
  const fields = mask.length === 0 ? updatableFields : mask;
  const merged: Deployment = { ...(deploymentOfSpec(current) as Deployment) };
  for (const name of fields) {
    if (name === "base_model") {
      if (d.baseModel !== current.baseModel) throw invalidArgument("update_mask", "base_model is immutable: create another deployment for another base model");
      continue;
    }
    const key = protoField[name as keyof typeof protoField];
    if (key === undefined) throw invalidArgument("update_mask", `${JSON.stringify(name.slice(0, 80))} cannot be updated; allowed: ${updatableFields.join(", ")}`);
    (merged as unknown as Record<string, unknown>)[key] = d[key];
  }
  return specOf(merged);
}

/** A checksum of a spec, for safe concurrent updates. */
export const etagOf = (s: DeploymentSpec): string => createHash("sha256").update(canonicalJson(s)).digest("hex").slice(0, 24);
