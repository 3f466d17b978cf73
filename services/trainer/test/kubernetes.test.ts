import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Job } from "kubernetes-models/batch/v1/Job";
import { call, createClient, fromGrpcError } from "@lathe/kit";
import { writeTinyModel } from "@lathe/models";
import { ComputeBackend, FineTuningJob_State as State, TrainerServiceClient, type FineTuningJob, type WatchFineTuningJobResponse } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { FineTuningJobStarted } from "@lathe/proto/lathe/events/v1/trainer_events";
import { createDatasetService } from "@lathe/dataset";
import { createRegistryService } from "@lathe/registry";
import { startKubernetesApi, startTestPlatform, testKeys, waitFor, type KubernetesApiDouble, type PodState, type TestPlatform } from "@lathe/testing";
import { runTrainJob, trainerService, trainingJobName } from "../src/index.js";
import { fails, jobRequest, options, seedTinyAndSupport } from "./support.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

/**
 * The Kubernetes runner against the Kubernetes API double: a trainer (API and runner in one
 * process, no local worker slots) makes a batch/v1 Job per attempt of each GPU job. The test plays
 * the cluster: when the double reports a Job created, its "pod" is the trainer's own `train-job`
 * entry run in this process with the Job's arguments and environment, or a pod the test makes
 * fail the way a cluster does.
 */
describe("TrainerService on Kubernetes: GPU jobs as batch/v1 Jobs on the node pool", () => {
  let t: TestPlatform;
  let k8s: KubernetesApiDouble;
  let acme: TrainerServiceClient;
  let train = "";
  let evalV = "";
  const dir = mkdtempSync(join(tmpdir(), "lathe-trainer-k8s-"));
  const image = "lathe/node-cuda:test";
  /** The in-process pods, by Job name, with their exit codes. */
  const pods = new Map<string, { abort: AbortController; done: Promise<number> }>();
  /** What the "cluster" does with a new Job: train it, or put its pod in a state. */
  let cluster: (job: any) => "train" | PodState = () => "train";
  /** The engine device the in-process pods are told GPU jobs train on (the trainer says cpu: no GPU here). */
  let podGpuDevice: string | undefined;

  const gpuJob = (over: Parameters<typeof jobRequest>[2] = {}) => jobRequest(train, evalV, { compute: { backend: ComputeBackend.COMPUTE_BACKEND_CUDA, gpuCount: 2, hardware: "nvidia-a100-40gb" }, ...over });
  const create = (id: string, job: FineTuningJob) => call(acme, "createFineTuningJob", { fineTuningJobId: id, fineTuningJob: job, requestId: "" }).then((r) => r.fineTuningJob!);
  const get = (id: string) => call(acme, "getFineTuningJob", { name: `fineTuningJobs/${id}` }).then((r) => r.fineTuningJob!);
  const watchToEnd = (id: string): Promise<FineTuningJob> =>
    new Promise((resolve, reject) => {
      let last: FineTuningJob | undefined;
      const s = acme.watchFineTuningJob({ name: `fineTuningJobs/${id}` });
      s.on("data", (m: WatchFineTuningJobResponse) => (last = m.fineTuningJob!));
      s.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
      s.on("end", () => resolve(last!));
    });
  const deleted = (name: string) => k8s.requests.some((r) => r.method === "DELETE" && r.path.startsWith(`/apis/batch/v1/namespaces/lathe/jobs/${name}`) && (r.path.includes("propagationPolicy=Background") || (r.body as { propagationPolicy?: string } | null)?.propagationPolicy === "Background"));

  beforeAll(async () => {
    k8s = await startKubernetesApi();
    const kubeconfig = join(dir, "kubeconfig");
    await k8s.writeKubeconfig(kubeconfig, "lathe");
    const modelDir = join(dir, "tiny");
    await writeTinyModel(modelDir, { seed: 1 });
    t = await startTestPlatform({
      env: { LATHE_IMPORT_ROOTS: dir },
      factories: [
        createRegistryService,
        createDatasetService,
        trainerService({
          ...options(0),
          // No GPU on the test machine: the pods train GPU jobs on the CPU engine, as told.
          LATHE_TRAINER_GPU_DEVICE: "cpu",
          LATHE_TRAINER_K8S_NAMESPACE: "lathe",
          LATHE_TRAINER_K8S_IMAGE: image,
          LATHE_TRAINER_K8S_KUBECONFIG: kubeconfig,
          LATHE_TRAINER_K8S_NODE_SELECTOR: JSON.stringify({ "lathe.dev/pool": "gpu" }),
          LATHE_TRAINER_K8S_TOLERATIONS: JSON.stringify([{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }]),
          LATHE_TRAINER_K8S_AFFINITY: JSON.stringify({ nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: "nvidia.com/gpu.product", operator: "In", values: ["NVIDIA-A100-SXM4-40GB"] }] }] } } }),
          LATHE_TRAINER_K8S_RESOURCES: JSON.stringify({ requests: { cpu: "4", memory: "8Gi" }, limits: { memory: "16Gi" } }),
          LATHE_TRAINER_K8S_ENV: JSON.stringify([{ name: "LATHE_PG_URL", valueFrom: { secretKeyRef: { name: "lathe-postgres", key: "url" } } }]),
          LATHE_TRAINER_K8S_ENV_FROM: JSON.stringify([{ configMapRef: { name: "lathe-env" } }]),
          LATHE_TRAINER_K8S_ARTIFACTS_CLAIM: "lathe-artifacts",
          LATHE_TRAINER_K8S_POD_SECURITY_CONTEXT: JSON.stringify({ runAsNonRoot: true, runAsUser: 10001, fsGroup: 10001 }),
          LATHE_TRAINER_K8S_TTL_SECONDS_AFTER_FINISHED: 600,
          LATHE_TRAINER_K8S_ACTIVE_DEADLINE_SECONDS: 7200,
        }),
      ],
    });
    // The pod's environment: what its env and envFrom would give it in a cluster (the Secret's and
    // ConfigMap's values), then the Job's own values on top.
    const base = t.platform.deps.config;
    const podEnv: Record<string, string> = {
      LATHE_PG_URL: t.pgUrl!,
      LATHE_LOG_LEVEL: process.env["LATHE_TEST_LOG_LEVEL"] ?? "silent",
      LATHE_TRAINER_THREADS: "1",
      LATHE_TRAINER_POLL_MS: "100",
      LATHE_TRAINER_LEASE_MS: "1500",
    };
    k8s.onJobCreated((job) => {
      const name = job.metadata.name as string;
      const what = cluster(job);
      if (what !== "train") return k8s.setPod(name, what);
      k8s.setPod(name, "running");
      const c = job.spec.template.spec.containers[0];
      expect(c.args.slice(0, 2)).toEqual(["services/trainer/dist/main.js", "train-job"]);
      const env = { ...podEnv, ...Object.fromEntries((c.env as { name: string; value?: string }[]).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!])) };
      expect(env["LATHE_ARTIFACTS_DIR"]).toBe(base.LATHE_ARTIFACTS_DIR ?? join(base.LATHE_DATA_DIR, "artifacts"));
      expect(env["LATHE_TRAINER_GPU_DEVICE"]).toBe("cpu");
      if (podGpuDevice !== undefined) env["LATHE_TRAINER_GPU_DEVICE"] = podGpuDevice;
      const abort = new AbortController();
      const done = runTrainJob(c.args.slice(2), env, { signal: abort.signal }).then(
        (code) => {
          if (k8s.pod(name)) k8s.setPod(name, code === 0 ? "succeeded" : { failed: code });
          return code;
        },
        (err: unknown) => {
          if (k8s.pod(name)) k8s.setPod(name, { failed: 1, message: String(err) });
          return 1;
        },
      );
      pods.set(name, { abort, done });
    });

    acme = createClient(TrainerServiceClient, t.address, { apiKey: testKeys.acme });
    ({ train, evalV } = await seedTinyAndSupport(t.address, modelDir));
  }, 60_000);

  afterAll(async () => {
    for (const p of pods.values()) p.abort.abort();
    await Promise.all([...pods.values()].map((p) => p.done));
    acme?.close();
    await t?.stop();
    await k8s?.close();
  });

  let uninterrupted = "";

  it("trains a GPU job as a Kubernetes Job carrying the job's GPUs and the node pool's selector, tolerations and affinity, each manifest valid against the Kubernetes schema", async () => {
    expect(await fails(create("too-many", gpuJob({ compute: { backend: ComputeBackend.COMPUTE_BACKEND_CUDA, gpuCount: 9, hardware: "" } })))).toMatchObject({ code: "INVALID_ARGUMENT", field: "fine_tuning_job.compute.gpu_count" });
    expect(await fails(create("cpu-gpus", gpuJob({ compute: { backend: ComputeBackend.COMPUTE_BACKEND_CPU, gpuCount: 1, hardware: "" } })))).toMatchObject({ code: "INVALID_ARGUMENT", field: "fine_tuning_job.compute.gpu_count" });

    const queued = await create("gpu-first", gpuJob());
    expect(queued.compute).toMatchObject({ backend: ComputeBackend.COMPUTE_BACKEND_CUDA, gpuCount: 2, hardware: "nvidia-a100-40gb" });
    const done = await watchToEnd("gpu-first");
    expect(done).toMatchObject({ state: State.STATE_SUCCEEDED, attemptCount: 1, worker: trainingJobName("acme", "gpu-first", 1) });
    expect(done.result!.adapterArtifactDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    uninterrupted = done.result!.adapterArtifactDigest;
    const { checkpoints } = await call(acme, "listCheckpoints", { parent: "fineTuningJobs/gpu-first", pageSize: 0, pageToken: "" });
    expect(checkpoints.length).toBeGreaterThan(0);

    const manifest = k8s.created.find((m) => m["metadata"].name === done.worker)!;
    expect(manifest).toMatchObject({
      apiVersion: "batch/v1",
      kind: "Job",
      metadata: { namespace: "lathe", labels: { "app.kubernetes.io/managed-by": "lathe-trainer", "app.kubernetes.io/part-of": "lathe", "lathe.dev/tenant": "acme", "lathe.dev/fine-tuning-job": "gpu-first", "lathe.dev/attempt": "1" } },
      spec: { backoffLimit: 0, activeDeadlineSeconds: 7200, ttlSecondsAfterFinished: 600 },
    });
    const pod = manifest["spec"].template.spec;
    expect(pod).toMatchObject({
      restartPolicy: "Never",
      nodeSelector: { "lathe.dev/pool": "gpu" },
      tolerations: [{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }],
      affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: "nvidia.com/gpu.product" }] }] } } },
      securityContext: { runAsUser: 10001 },
      volumes: expect.arrayContaining([{ name: "artifacts", persistentVolumeClaim: { claimName: "lathe-artifacts" } }]),
    });
    expect(pod.containers[0]).toMatchObject({
      image,
      args: ["services/trainer/dist/main.js", "train-job", "--job", "acme/gpu-first", "--attempt", "1", "--worker", done.worker],
      resources: { requests: { cpu: "4", memory: "8Gi" }, limits: { memory: "16Gi", "nvidia.com/gpu": "2" } },
      envFrom: [{ configMapRef: { name: "lathe-env" } }],
      env: expect.arrayContaining([{ name: "LATHE_PG_URL", valueFrom: { secretKeyRef: { name: "lathe-postgres", key: "url" } } }]),
    });
    // A finished Job is left for ttlSecondsAfterFinished, for its logs.
    expect(deleted(done.worker)).toBe(false);
    expect(k8s.created.length).toBeGreaterThan(0);
    for (const m of k8s.created) expect(() => new Job(m as never).validate()).not.toThrow();
  }, 120_000);

  it("a GPU job whose pod has no CUDA device fails with ENGINE_UNSUPPORTED naming the devices it has, never training on the CPU unasked", async () => {
    podGpuDevice = "cuda"; // a trainer left at its default, its pod on a machine without a usable GPU
    try {
      await create("no-cuda", gpuJob());
      const done = await watchToEnd("no-cuda");
      expect(done.state).toBe(State.STATE_FAILED);
      expect(done.error).toMatchObject({ reason: "ENGINE_UNSUPPORTED" });
      expect(done.error!.message).toContain("'cuda'");
      expect(done.error!.message).toContain("cpu");
      expect(done.result?.adapterArtifactDigest ?? "").toBe("");
    } finally {
      podGpuDevice = undefined;
    }
  }, 60_000);

  it("a pod killed for memory fails the job with the limit and what to change", async () => {
    cluster = (job) => (job.metadata.labels["lathe.dev/fine-tuning-job"] === "oom" ? "oom-killed" : "train");
    await create("oom", gpuJob());
    const done = await watchToEnd("oom");
    expect(done.state).toBe(State.STATE_FAILED);
    expect(done.error).toMatchObject({ code: "RESOURCE_EXHAUSTED", reason: "POD_OUT_OF_MEMORY" });
    expect(done.error!.message).toContain("the training pod ran out of memory (limit 16Gi)");
    expect(done.error!.message).toContain("per_device_train_batch_size");
    expect(done.attemptCount).toBe(1);
  }, 60_000);

  it("an image that cannot be pulled fails the job naming the image, and its Job is deleted", async () => {
    cluster = (job) => (job.metadata.labels["lathe.dev/fine-tuning-job"] === "no-image" ? "err-image-pull" : "train");
    await create("no-image", gpuJob());
    const done = await watchToEnd("no-image");
    expect(done.error).toMatchObject({ reason: "IMAGE_PULL_FAILED" });
    expect(done.error!.message).toContain(`could not pull its image ${image}`);
    await waitFor(async () => (deleted(trainingJobName("acme", "no-image", 1)) ? true : undefined), { timeoutMs: 10_000, what: "the Job deleted" });
  }, 60_000);

  it("a pod lost with its node is tried again as a new Job that resumes from the last checkpoint, ending with the uninterrupted run's adapter", async () => {
    cluster = () => "train";
    await create("node-lost", gpuJob());
    const first = trainingJobName("acme", "node-lost", 1);
    await waitFor(async () => ((await call(acme, "listCheckpoints", { parent: "fineTuningJobs/node-lost", pageSize: 0, pageToken: "" })).checkpoints.length >= 2 ? true : undefined), { timeoutMs: 60_000, what: "two checkpoints" });
    // The node is gone: the pod GC deletes its pod (its trainer may still run, cut off: it stops once it sees its claim gone).
    k8s.setPod(first, "deleted");
    const done = await watchToEnd("node-lost");
    expect(done).toMatchObject({ state: State.STATE_SUCCEEDED, attemptCount: 2, worker: trainingJobName("acme", "node-lost", 2) });
    expect(done.result!.adapterArtifactDigest).toBe(uninterrupted);
    expect(await pods.get(first)!.done).toBe(0);
    expect(deleted(first)).toBe(true);
    expect(k8s.created.map((m) => m["metadata"].name)).toEqual(expect.arrayContaining([first, trainingJobName("acme", "node-lost", 2)]));
    const db = new pg.Client({ connectionString: t.pgUrl });
    await db.connect();
    try {
      const { rows } = await db.query<{ data: Buffer }>("select data from trainer.outbox where subject like '%fine_tuning_job_started' order by seq");
      const started = rows.map((r) => FineTuningJobStarted.decode(r.data)).filter((e) => e.fineTuningJob === "fineTuningJobs/node-lost");
      expect(started.map((e) => [e.attempt, e.worker])).toEqual([
        [1, first],
        [2, trainingJobName("acme", "node-lost", 2)],
      ]);
      expect(started[1]!.resumedFromCheckpoint).toMatch(/^fineTuningJobs\/node-lost\/checkpoints\/step-\d+$/);
    } finally {
      await db.end();
    }
    for (const m of k8s.created) expect(() => new Job(m as never).validate()).not.toThrow();
  }, 120_000);

  it("cancelling a job deletes its Job (pods in the background) and its trainer stops", async () => {
    const long = gpuJob();
    long.trainingArguments!.numTrainEpochs = 100;
    long.trainingArguments!.perDeviceTrainBatchSize = 1;
    await create("cancel-me", long);
    const name = trainingJobName("acme", "cancel-me", 1);
    await waitFor(async () => ((await get("cancel-me")).progress?.step ?? 0) > 0 || undefined, { timeoutMs: 60_000, what: "a step" });
    await call(acme, "cancelFineTuningJob", { name: "fineTuningJobs/cancel-me", reason: "not needed" });
    await waitFor(async () => (deleted(name) ? true : undefined), { timeoutMs: 10_000, what: "the Job deleted" });
    expect(await pods.get(name)!.done).toBe(0);
    expect((await get("cancel-me")).state).toBe(State.STATE_CANCELLED);
  }, 90_000);
});
