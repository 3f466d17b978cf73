import { describe, expect, it } from "vitest";
import { checkSameRequest, type AppError } from "@lathe/kit";
import { CreateFineTuningJobRequest, FineTuningJob, FineTuningJob_State } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { canonicalCreateRequest } from "./canonical-request.js";

const request = (job: Parameters<typeof FineTuningJob.fromPartial>[0], id = "j", requestId = "r") =>
  CreateFineTuningJobRequest.fromPartial({ fineTuningJobId: id, fineTuningJob: FineTuningJob.fromPartial(job), requestId });

const base = { baseModel: "models/tiny", trainDatasetVersion: "datasets/d/versions/v", labels: { "team-a": "x", my_key: "y" }, loraConfig: { r: 4, targetModules: ["q_proj"] } };

describe("canonicalCreateRequest", () => {
  it("uses the API's snake_case field names and keeps label keys as written", () => {
    expect(canonicalCreateRequest(request(base))).toEqual({
      fine_tuning_job_id: "j",
      fine_tuning_job: { base_model: "models/tiny", train_dataset_version: "datasets/d/versions/v", labels: { "team-a": "x", my_key: "y" }, lora_config: { r: 4, target_modules: ["q_proj"] } },
    });
  });

  it("leaves out the request id, default values and the fields the server sets", () => {
    const plain = canonicalCreateRequest(request(base, "j", "r1"));
    const noisy = canonicalCreateRequest(request({ ...base, name: "fineTuningJobs/x", state: FineTuningJob_State.STATE_RUNNING, attemptCount: 3, worker: "w", createTime: new Date(0), loraConfig: { r: 4, loraAlpha: 0, targetModules: ["q_proj"] } }, "j", "r2"));
    expect(noisy).toEqual(plain);
  });

  it("a difference is reported by its API path", () => {
    const a = canonicalCreateRequest(request(base));
    const b = canonicalCreateRequest(request({ ...base, loraConfig: { r: 8, targetModules: ["q_proj"] } }));
    let err: AppError | undefined;
    try {
      checkSameRequest("r", "fineTuningJobs/j", a, b);
    } catch (e) {
      err = e as AppError;
    }
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT", reason: "REQUEST_ID_REUSED", metadata: { differing_field: "fine_tuning_job.lora_config.r" } });
  });
});
