import { createWriteStream } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import type { Metadata } from "@grpc/grpc-js";
import { AppError, cachedFolder, call, callerMetadata, chatRoles, createClient, digestHex, fromGrpcError, invalidArgument, prefixedDigest, type ArtifactStore, type CallContext } from "@lathe/kit";
import { encodeSequences, inspectModelFolder, loadTokenizer, packExamples, tokenizeExample, type ModelConfig, type SequenceSet, type TrainingExample } from "@lathe/models";
import { DatasetServiceClient, DatasetVersion_State, type DatasetRow } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { RegistryServiceClient, Model_State } from "@lathe/proto/lathe/registry/v1/registry_service";
import { Readiness } from "@lathe/proto/lathe/type/v1/data_check";
import type { DataShape } from "./estimate.js";
import type { JobInputs, JobSpec } from "./spec.js";

/** Everything a job is pinned to, and what the estimate needs of it. */
export interface ResolvedInputs {
  inputs: JobInputs;
  config: ModelConfig;
  parameterCount: number;
  data: DataShape;
}

/**
 * Resolves a job's inputs on the caller's behalf (with the caller's key): the base model must be
 * READY in the registry, the dataset versions validated and not NOT_READY. The rows are copied
 * into the artifact store as chat JSONL (for lineage) and, tokenized and masked with the model's
 * tokenizer and chat template, as the job's sequences: the job trains on exactly what was
 * estimated even if the worker runs elsewhere or later, the worker needs no key of its own, and
 * nothing parses or tokenizes the rows again. The model is read
 * from the artifact store by the digest the registry recorded.
 */
export async function resolveInputs(spec: JobSpec, ctx: CallContext, deps: { peer: (s: "registry" | "dataset") => string; artifacts: ArtifactStore; cacheDir: string }): Promise<ResolvedInputs> {
  const md = callerMetadata(ctx);
  const f = (n: string) => `fine_tuning_job.${n}`;

  const registry = createClient(RegistryServiceClient, deps.peer("registry"), { deadlineMs: 30_000 });
  let model;
  try {
    ({ model } = await call(registry, "getModel", { name: spec.baseModel }, md).catch((err: unknown) => {
      if (err instanceof AppError && err.code === "NOT_FOUND") throw invalidArgument(f("base_model"), `${spec.baseModel} is not a registered model`);
      throw err;
    }));
  } finally {
    registry.close();
  }
  if (!model || model.state !== Model_State.STATE_READY || model.artifactDigest === "") {
    throw new AppError("FAILED_PRECONDITION", "MODEL_NOT_READY", `${f("base_model")}: ${spec.baseModel} is not ready (it has no imported files)`, { field: f("base_model") });
  }
  const modelDir = await cachedFolder(deps.artifacts, digestHex(model.artifactDigest), join(deps.cacheDir, "models"));
  const inspection = await inspectModelFolder(modelDir);
  if (spec.args.maxSeqLength > inspection.config.contextLength) {
    throw invalidArgument(f("training_arguments.max_seq_length"), `${spec.args.maxSeqLength} is more than ${spec.baseModel}'s context length, ${inspection.config.contextLength}`);
  }
  const tok = await loadTokenizer(modelDir);

  const dataset = createClient(DatasetServiceClient, deps.peer("dataset"), { deadlineMs: 30_000 });
  try {
    const rowsOf = async (field: string, name: string) => {
      const { datasetVersion: v } = await call(dataset, "getDatasetVersion", { name }, md).catch((err: unknown) => {
        if (err instanceof AppError && err.code === "NOT_FOUND") throw invalidArgument(field, `${name} was not found`);
        throw err;
      });
      if (!v || v.state !== DatasetVersion_State.STATE_VALIDATED) throw new AppError("FAILED_PRECONDITION", "DATASET_VERSION_NOT_VALIDATED", `${field}: ${name} is not validated (state ${DatasetVersion_State[v?.state ?? 0]})`, { field });
      if (v.readiness === Readiness.READINESS_NOT_READY) {
        throw new AppError("FAILED_PRECONDITION", "DATASET_VERSION_NOT_READY", `${field}: ${name}'s quality report says it is not ready for training; see lathe datasets report ${name}, fix it or derive a cleaned version`, { field });
      }
      return storeRows(dataset, md, name, field, deps.artifacts);
    };
    const train = await rowsOf(f("train_dataset_version"), spec.trainDatasetVersion);
    const evalRows = spec.evalDatasetVersion === "" ? null : await rowsOf(f("eval_dataset_version"), spec.evalDatasetVersion);

    // The rows become the sequences the job trains on, once, here: the worker and the engine
    // take these, and the estimate counts them.
    const tokenizeOpts = { maxSeqLength: spec.args.maxSeqLength, trainOnInputs: spec.args.trainOnInputs };
    const tokens: number[] = [];
    const trainedTokens: number[] = [];
    let truncated = 0;
    const sequences = [];
    for (const ex of train.examples) {
      const t = tokenizeExample(tok, ex, tokenizeOpts);
      tokens.push(t.ids.length);
      trainedTokens.push(t.trainedTokens);
      if (t.truncated) truncated++;
      sequences.push({ ids: t.ids, labels: t.labels });
    }
    const meta = { ...tokenizeOpts, modelDigest: model.artifactDigest, chatTemplateFingerprint: inspection.chatTemplateFingerprint };
    const pin = async (set: SequenceSet) => prefixedDigest((await deps.artifacts.put(encodeSequences(set, meta))).digest);
    const trainSequencesDigest = await pin({ sequences, truncated });
    let evalSequencesDigest = "";
    if (evalRows !== null) {
      const evalTokenized = evalRows.examples.map((ex) => tokenizeExample(tok, ex, tokenizeOpts));
      evalSequencesDigest = await pin({ sequences: evalTokenized.map((t) => ({ ids: t.ids, labels: t.labels })), truncated: evalTokenized.filter((t) => t.truncated).length });
    }
    const data: DataShape = {
      rows: train.examples.length,
      tokens,
      trainedTokens,
      truncated,
      sequences: spec.args.packing ? packExamples(sequences, spec.args.maxSeqLength, 0).length : sequences.length,
    };
    return {
      inputs: {
        modelDigest: model.artifactDigest,
        parameterCount: inspection.parameterCount,
        modelContextLength: inspection.config.contextLength,
        chatTemplateFingerprint: inspection.chatTemplateFingerprint,
        trainRowsDigest: train.digest,
        evalRowsDigest: evalRows?.digest ?? "",
        trainSequencesDigest,
        evalSequencesDigest,
        trainRows: train.examples.length,
        evalRows: evalRows?.examples.length ?? 0,
      },
      config: inspection.config,
      parameterCount: inspection.parameterCount,
      data,
    };
  } finally {
    dataset.close();
  }
}

/** Streams a dataset version's parsed rows into the artifact store as chat JSONL. */
async function storeRows(client: DatasetServiceClient, md: Metadata, name: string, field: string, artifacts: ArtifactStore): Promise<{ digest: string; examples: TrainingExample[] }> {
  const examples: TrainingExample[] = [];
  await new Promise<void>((resolve, reject) => {
    const stream = client.streamDatasetRows({ name, offset: 0, limit: 0, failingOnly: false }, md);
    stream.on("data", (r: { rows: DatasetRow[] }) => {
      for (const row of r.rows) {
        if (row.messages.length === 0) continue; // a line that never parsed
        examples.push({ messages: row.messages.map((m) => ({ role: chatRoles.name(m.role) ?? "user", content: m.content })) });
      }
    });
    stream.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
    stream.on("end", () => resolve());
  });
  if (examples.length === 0) throw new AppError("FAILED_PRECONDITION", "DATASET_VERSION_EMPTY", `${field}: ${name} has no rows to train on`, { field });
  const ref = await artifacts.put(Readable.from(examples.map((e) => `${JSON.stringify(e)}\n`)).map((s: string) => Buffer.from(s)));
  return { digest: prefixedDigest(ref.digest), examples };
}

/** Writes a stored artifact to a file (checked against its digest on the way). */
export async function artifactToFile(artifacts: ArtifactStore, digest: string, file: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const out = createWriteStream(file);
  try {
    for await (const chunk of await artifacts.get(digestHex(digest))) {
      if (!out.write(chunk)) await new Promise<void>((r) => out.once("drain", () => r()));
    }
  } catch (err) {
    out.destroy();
    await rm(file, { force: true });
    throw err;
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
}
