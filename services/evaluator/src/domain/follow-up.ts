import type { Metadata } from "@grpc/grpc-js";
import { AppError, call, createClient, type Logger } from "@lathe/kit";
import type { AdapterVersionCreated } from "@lathe/proto/lathe/events/v1/registry_events";
import { EvaluationRun } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import { RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import type { RunStore } from "./runs.js";

/** The baseline a follow-up names: a version, an alias (its version now; the base model while it points nowhere), a model, or by default the promotion alias's version, else the base model. */
async function baselineOf(e: AdapterVersionCreated, md: Metadata, registryAddress: string): Promise<{ model: string; adapterVersion: string }> {
  const ev = e.followUp!.evaluation!;
  let name = ev.baseline;
  if (name === "" && e.followUp?.promotion?.alias) name = `${e.adapter}/aliases/${e.followUp.promotion.alias}`;
  if (name === "" || /^models\/[^/]+$/.test(name)) return { model: name || e.baseModel, adapterVersion: "" };
  let version = name;
  if (name.includes("/aliases/")) {
    const registry = createClient(RegistryServiceClient, registryAddress, { deadlineMs: 30_000 });
    try {
      version = (await call(registry, "getAlias", { name }, md).catch((err: unknown) => {
        if (err instanceof AppError && err.code === "NOT_FOUND") return { alias: undefined };
        throw err;
      })).alias?.adapterVersion ?? "";
    } finally {
      registry.close();
    }
  }
  // An alias that points nowhere yet, or at the new version itself: the base model is the baseline.
  if (version === "" || version === e.adapterVersion) return { model: e.baseModel, adapterVersion: "" };
  return { model: version.split("/").slice(0, 2).join("/"), adapterVersion: version };
}

/**
 * The run a registered version's follow-up asks for (its job carried evaluation settings): the
 * new version as the candidate against its baseline, on the follow-up's eval set (else the job's).
 * Created with a request id of the version, so an event applied twice makes one run.
 */
export async function createFollowUpRun(e: AdapterVersionCreated, tenant: string, md: Metadata, o: { runs: RunStore; registryAddress: string; logger: Logger }): Promise<void> {
  const ev = e.followUp?.evaluation;
  if (!ev) return;
  const evalSet = ev.evalDatasetVersion || e.evalDatasetVersion;
  if (evalSet === "") {
    o.logger.warn({ adapter_version: e.adapterVersion, job: e.fineTuningJob }, "the job asked for an evaluation but names no eval dataset version; none is run");
    return;
  }
  const baseline = await baselineOf(e, md, o.registryAddress);
  await o.runs.create(
    tenant,
    {
      evaluationRunId: "",
      evaluationRun: EvaluationRun.fromPartial({
        displayName: `${e.adapterVersion} against ${baseline.adapterVersion || baseline.model}`,
        candidate: { model: e.baseModel, adapterVersion: e.adapterVersion },
        baseline,
        evalDatasetVersion: evalSet,
        metrics: ev.metrics,
        formatCheck: ev.formatCheck,
        generationParams: ev.generationParams,
        maxExamples: ev.maxExamples,
      }),
      requestId: `follow-up:${e.adapterVersion}`,
    },
    e.fineTuningJob,
    e.followUp,
  );
}
