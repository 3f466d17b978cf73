import { join } from "node:path";
import { AppError, asAppError, cachedFolder, digestHex, isRetryable, PollingLoop, tenantMetadata, type ArtifactStore, type Logger } from "@lathe/kit";
import type { ServedState } from "../db/migrations.js";
import type { DeploymentRow, DeploymentStore } from "./deployments.js";
import type { EmbeddedBackend } from "./embedded.js";
import type { RegistryModels } from "./registry.js";
import { UpstreamClient } from "./upstream.js";

/** The name an adapter of a deployment is loaded under upstream: unique per tenant, deployment and version. */
export function upstreamLoraName(r: Pick<DeploymentRow, "tenant" | "deployment_id">, a: { servedName: string; version: string }): string {
  return `${r.tenant}/${r.deployment_id}/${a.servedName}@${a.version.split("/").at(-1)!}`;
}

/**
 * Brings deployments to their spec, one at a time: resolves it with the registry (aliases to
 * versions), makes the backend ready to serve it (embedded: the GGUF files made and the base
 * model loaded; upstream: the base model listed and each adapter loaded into it), then records
 * it READY with what it serves, or FAILED saying why, and lets go of what it no longer serves.
 * Requests keep being answered by the last rollout meanwhile. Deployments left CREATING or
 * UPDATING by a stopped gateway are taken up when it starts again.
 */
export class Rollout {
  private readonly loop: PollingLoop;

  constructor(
    private readonly o: {
      store: DeploymentStore;
      registry: RegistryModels;
      embedded: EmbeddedBackend;
      artifacts: ArtifactStore;
      /** Where adapter folders are made for an upstream to read (a volume it shares). */
      folderCache: string;
      apiKeys: Readonly<Record<string, string>>;
      logger: Logger;
      intervalMs: number;
    },
  ) {
    this.loop = new PollingLoop({ name: "deployment rollout", intervalMs: o.intervalMs, logger: o.logger, tick: (signal) => this.tick(signal), retryMs: (n) => Math.min(30_000, o.intervalMs * 2 ** n) });
  }

  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
  }

  notify(): void {
    this.loop.notify();
  }

  private async tick(signal: AbortSignal): Promise<void> {
    let retry: unknown;
    for (const r of await this.o.store.pending()) {
      if (signal.aborted) return;
      try {
        const served = await this.o.registry.resolveSpec(r.spec, tenantMetadata(this.o.apiKeys, r.tenant));
        await this.prepare(r, served);
        if (await this.o.store.finishRollout(r, { served })) {
          this.o.logger.info({ deployment: r.deployment_id, tenant: r.tenant, adapters: served.adapters.map((a) => a.version) }, "deployment ready");
          await this.retire(r, r.served, served);
        }
      } catch (err) {
        // A registry or upstream that does not answer is tried again; anything else fails the rollout.
        if (isRetryable(err)) {
          retry = err;
          continue;
        }
        const e = asAppError(err);
        const error = { code: e.code, reason: e.reason, message: e.code === "INTERNAL" ? "the rollout failed; see the gateway's log" : e.message };
        if (e.code === "INTERNAL") this.o.logger.error({ err, deployment: r.deployment_id }, "rollout failed");
        await this.o.store.finishRollout(r, { error });
      }
    }
    if (retry !== undefined) throw retry;
  }

  private async prepare(r: DeploymentRow, served: ServedState): Promise<void> {
    if (r.spec.backend === "embedded") {
      await this.o.embedded.prepare(served.baseDigest, served.contextLength, served.adapters.map((a) => a.digest));
      return;
    }
    const up = new UpstreamClient(r.spec.upstreamBaseUrl, r.spec.upstreamApiKeySecret);
    const listed = new Set(await up.models());
    const baseName = r.spec.upstreamModel || r.spec.baseModel.replace(/^models\//, "");
    if (!listed.has(baseName)) {
      throw new AppError("FAILED_PRECONDITION", "UPSTREAM_MODEL_NOT_SERVED", `the upstream ${r.spec.upstreamBaseUrl} does not serve ${baseName} (it serves ${[...listed].slice(0, 10).join(", ") || "nothing"}); set upstream_model to its name there`);
    }
    for (const a of served.adapters) {
      const name = upstreamLoraName(r, a);
      if (listed.has(name)) continue;
      const folder = await cachedFolder(this.o.artifacts, digestHex(a.digest), this.o.folderCache);
      await up.loadLora(name, folder, a.rank);
    }
  }

  /** Unloads from an upstream the adapter versions a deployment served before and serves no more. */
  async retire(r: Pick<DeploymentRow, "tenant" | "deployment_id" | "spec">, before: ServedState, now: ServedState | undefined): Promise<void> {
    if (r.spec.backend !== "upstream") return;
    const keep = new Set((now?.adapters ?? []).map((a) => upstreamLoraName(r, a)));
    const up = new UpstreamClient(r.spec.upstreamBaseUrl, r.spec.upstreamApiKeySecret);
    for (const a of before.adapters) {
      const name = upstreamLoraName(r, a);
      if (keep.has(name)) continue;
      try {
        await up.unloadLora(name);
      } catch (err) {
        this.o.logger.warn({ err, deployment: r.deployment_id, lora: name }, "could not unload an adapter from the upstream");
      }
    }
  }
}

/** The folder an upstream reads adapters from, under the gateway's cache. */
export const upstreamFolderCache = (cacheDir: string) => join(cacheDir, "folders");
