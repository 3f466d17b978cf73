import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { devices } from "@lathe/engine";
import { call, ConfigError, createClient } from "@lathe/kit";
import { writeTinyModel } from "@lathe/models";
import { ComputeBackend, FineTuningJob_State as State, TrainerServiceClient, type FineTuningJob } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { createDatasetService } from "@lathe/dataset";
import { createRegistryService } from "@lathe/registry";
import { startTestPlatform, testKeys, type TestPlatform } from "@lathe/testing";
import { localGpuSlots, trainerService } from "../src/index.js";
import { fails, jobRequest, options, seedTinyAndSupport } from "./support.js";

/**
 * GPU jobs on the trainer's own GPU (LATHE_TRAINER_GPUS): how many slots a process takes, and a
 * GPU job scheduled onto a local GPU slot end to end. This machine has no GPU, so that job is told
 * to train on the CPU engine (LATHE_TRAINER_GPU_DEVICE=cpu); the CUDA engine itself is proven by
 * libs/engine/dev/gpu/run.sh on a GPU machine.
 */
describe("local GPU slots (LATHE_TRAINER_GPUS)", () => {
  it("auto takes one slot where the engine has a CUDA device and none elsewhere; asking for slots without one stops the service at start", () => {
    expect(localGpuSlots({ LATHE_TRAINER_GPUS: "auto" }, ["cpu"])).toBe(0);
    expect(localGpuSlots({}, ["cpu", "cuda"])).toBe(1);
    expect(localGpuSlots({ LATHE_TRAINER_GPUS: 2 }, ["cpu", "cuda"])).toBe(2);
    expect(localGpuSlots({ LATHE_TRAINER_GPUS: 0 }, ["cpu"])).toBe(0);
    expect(localGpuSlots({ LATHE_TRAINER_GPUS: 1, LATHE_TRAINER_GPU_DEVICE: "cpu" }, ["cpu"])).toBe(1);
    let err: unknown;
    try {
      localGpuSlots({ LATHE_TRAINER_GPUS: 1 }, ["cpu"]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems[0]).toMatch(/^LATHE_TRAINER_GPUS: 1 GPU slots, but the engine has no CUDA device here \(devices: cpu\)/);
  });

  it("this engine's devices decide auto (no CUDA device on a machine without a GPU)", () => {
    expect(devices()[0]).toBe("cpu");
    expect(localGpuSlots({}, devices())).toBe(devices().includes("cuda") ? 1 : 0);
  });
});

describe("TrainerService with a local GPU slot: a GPU job trains on the trainer's own GPU", () => {
  let t: TestPlatform;
  let acme: TrainerServiceClient;
  let train = "";
  let evalV = "";
  const dir = mkdtempSync(join(tmpdir(), "lathe-trainer-gpu-slots-"));
  const gpuJob = (gpuCount: number) => jobRequest(train, evalV, { compute: { backend: ComputeBackend.COMPUTE_BACKEND_CUDA, gpuCount, hardware: "nvidia-a10g-24gb" } });
  const create = (id: string, job: FineTuningJob) => call(acme, "createFineTuningJob", { fineTuningJobId: id, fineTuningJob: job, requestId: "" }).then((r) => r.fineTuningJob!);

  beforeAll(async () => {
    const modelDir = join(dir, "tiny");
    await writeTinyModel(modelDir, { seed: 1 });
    // No CPU slots: only the GPU slot can take the job.
    t = await startTestPlatform({
      env: { LATHE_IMPORT_ROOTS: dir },
      factories: [createRegistryService, createDatasetService, trainerService({ ...options(0), LATHE_TRAINER_GPUS: 1, LATHE_TRAINER_GPU_DEVICE: "cpu" })],
    });
    acme = createClient(TrainerServiceClient, t.address, { apiKey: testKeys.acme });
    ({ train, evalV } = await seedTinyAndSupport(t.address, modelDir));
  }, 60_000);

  afterAll(async () => {
    acme?.close();
    await t?.stop();
  });

  it("a one-GPU job is claimed by the local GPU slot and succeeds; a job asking for more GPUs than a slot has is refused at creation", async () => {
    expect(await fails(create("two-gpus", gpuJob(2)))).toMatchObject({ code: "FAILED_PRECONDITION", reason: "TOO_MANY_GPUS", field: "fine_tuning_job.compute.gpu_count" });
    const queued = await create("one-gpu", gpuJob(1));
    expect(queued.compute).toMatchObject({ backend: ComputeBackend.COMPUTE_BACKEND_CUDA, gpuCount: 1, hardware: "nvidia-a10g-24gb" });
    let job = queued;
    for (let i = 0; i < 600 && ![State.STATE_SUCCEEDED, State.STATE_FAILED].includes(job.state); i++) {
      await new Promise((r) => setTimeout(r, 100));
      job = (await call(acme, "getFineTuningJob", { name: "fineTuningJobs/one-gpu" })).fineTuningJob!;
    }
    expect(job.error).toBeUndefined();
    expect(job).toMatchObject({ state: State.STATE_SUCCEEDED, attemptCount: 1 });
    expect(job.worker).toMatch(/^local-/);
    expect(job.result!.adapterArtifactDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
  }, 90_000);

  it("a trainer asked for GPU slots on a machine whose engine has no CUDA device does not start", async () => {
    if (devices().includes("cuda")) return; // a GPU machine: the case does not arise
    await expect(
      startTestPlatform({ factories: [createRegistryService, createDatasetService, trainerService({ ...options(0), LATHE_TRAINER_GPUS: 1 })] }),
    ).rejects.toThrow(/LATHE_TRAINER_GPUS: 1 GPU slots, but the engine has no CUDA device here/);
  });
});
