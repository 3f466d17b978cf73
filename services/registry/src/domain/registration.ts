import { FollowUp } from "@lathe/proto/lathe/type/v1/follow_up";
import { join } from "node:path";
import { AppError, artifactUri, cachedFolder, digestHex, inSpan, isRetryable, PollingLoop, type ArtifactStore, type Logger } from "@lathe/kit";
import { AdapterVersion } from "@lathe/proto/lathe/registry/v1/registry_service";
import { sql, type Kysely } from "kysely";
import type { RegistryTables } from "../db/migrations.js";
import { versionRequestBody, type AdapterStore } from "./adapters.js";
import { schema } from "./models.js";

interface PendingRequest {
  adapter: string;
  description: string;
  labels: Record<string, string>;
  artifactUri: string;
  artifactDigest: string;
  method: number;
  checkpoint: string;
  trainDatasetVersion: string;
  evalDatasetVersion: string;
  chatTemplateFingerprint: string;
  /** The job's follow-up (proto JSON of FollowUp), passed on in `adapter_version_created`; absent for registrations stored before it was kept. */
  followUp?: unknown;
  /** The W3C trace headers of the job's success event: the registration continues its trace. */
  trace?: Record<string, string>;
}

/** The most attempts one registration gets. */
export const maxRegistrationAttempts = 10;

/**
 * Whether a registration that failed with `err`, after `attemptsBefore` earlier failed attempts,
 * is given up: at once unless kit's `retryableCodes` says its error may pass (unavailable,
 * exhausted, aborted), and after `maxRegistrationAttempts` in any case.
 */
export function givesUp(err: unknown, attemptsBefore: number): boolean {
  return !isRetryable(err) || attemptsBefore + 1 >= maxRegistrationAttempts;
}

/**
 * Registers the adapter versions that finished jobs asked for. A registration is retried while
 * it fails for a passing reason; one that can never succeed (the adapter does not fit its base,
 * say) is given up and its error kept for `lathe` to show.
 */
export class RegistrationWorker {
  private readonly loop: PollingLoop;

  constructor(
    private readonly opts: { db: Kysely<RegistryTables>; adapters: AdapterStore; artifacts: ArtifactStore; cacheDir: string; logger: Logger; pollMs: number },
  ) {
    this.loop = new PollingLoop({
      name: "registration worker",
      intervalMs: opts.pollMs,
      logger: opts.logger,
      tick: async (signal) => {
        await this.runOnce(signal);
      },
    });
  }

  start(): void {
    this.loop.start();
  }

  /** Registers soon what was just asked for. */
  notify(): void {
    this.loop.notify();
  }

  /** Attempts up to 10 pending registrations, one at a time and none once `signal` aborts; returns how many were pending. */
  async runOnce(signal?: AbortSignal): Promise<number> {
    const t = this.opts.db.withSchema(schema);
    const pending = await t.selectFrom("pending_registrations").selectAll().where("last_error", "is", null).limit(10).execute();
    for (const p of pending) {
      if (signal?.aborted) break;
      const r = p.request as PendingRequest;
      try {
        // The trainer stores the adapter in the shared artifact store (`artifact:sha256:…`); it is
        // read from there only, never from a path on some machine's disk.
        if (r.artifactDigest === "") throw new AppError("FAILED_PRECONDITION", "ADAPTER_NOT_STORED", `${p.job} finished without a stored adapter (artifact ${r.artifactUri || "none"})`);
        const digest = digestHex(r.artifactDigest);
        const req = {
          parent: r.adapter,
          adapterVersion: AdapterVersion.fromPartial({ description: r.description, labels: r.labels, artifactUri: artifactUri(digest), method: r.method, fineTuningJob: p.job, checkpoint: r.checkpoint, trainDatasetVersion: r.trainDatasetVersion, evalDatasetVersion: r.evalDatasetVersion, chatTemplateFingerprint: r.chatTemplateFingerprint }),
          allowMissing: true,
          requestId: `job:${p.job}`,
        };
        const followUp = r.followUp === undefined ? undefined : FollowUp.fromJSON(r.followUp);
        await inSpan("registry.register_adapter", { "lathe.service": "registry", "lathe.fine_tuning_job": p.job }, r.trace, () => this.opts.adapters.createVersion(p.tenant, req, `fine-tuning job ${p.job}`, versionRequestBody(req), async () => {
          // A materialized copy of our own store (plain files, digests checked on the way out).
          const dir = await cachedFolder(this.opts.artifacts, digest, join(this.opts.cacheDir, "folders"));
          return { folder: { dir, files: [], remove: async () => undefined }, shownAs: `the adapter of ${p.job}`, field: "adapter_version.artifact_uri" };
        }, followUp));
        await t.deleteFrom("pending_registrations").where("event_id", "=", p.event_id).execute();
      } catch (err) {
        const final = givesUp(err, p.attempts);
        await t
          .updateTable("pending_registrations")
          .set({ attempts: sql`attempts + 1`, last_error: final ? (err as Error).message : null })
          .where("event_id", "=", p.event_id)
          .execute();
        this.opts.logger.warn({ err, job: p.job, final }, "registering a job's adapter failed");
      }
    }
    return pending.length;
  }

  async stop(): Promise<void> {
    await this.loop.stop();
  }
}
