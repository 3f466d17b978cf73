import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call } from "@lathe/kit";
import { FineTuningJob_State as State } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { fails, jobRequest, startTrainerTestPlatform, type TrainerTestPlatform } from "./support.js";

describe("CreateFineTuningJob request ids (AIP-155)", () => {
  let p: TrainerTestPlatform;
  beforeAll(async () => {
    p = await startTrainerTestPlatform();
  });
  afterAll(async () => {
    await p?.stop();
  });

  const create = (id: string, job: ReturnType<typeof jobRequest>, requestId: string) => call(p.acme, "createFineTuningJob", { fineTuningJobId: id, fineTuningJob: job, requestId });

  it("a retry of the same request returns the job the first call made, and creates no other", async () => {
    const job = jobRequest(p.train, p.evalV, { labels: { team: "support" } });
    const first = (await create("same", job, "req-same")).fineTuningJob!;
    expect(first).toMatchObject({ name: "fineTuningJobs/same", state: State.STATE_QUEUED });
    // Defaults spelled out, and fields the server sets, do not make it another request.
    const spelled = jobRequest(p.train, p.evalV, { labels: { team: "support" }, name: "fineTuningJobs/whatever", state: State.STATE_SUCCEEDED });
    spelled.trainingArguments!.evalSteps = 0;
    const again = (await create("same", spelled, "req-same")).fineTuningJob!;
    expect(again.name).toBe("fineTuningJobs/same");
    expect(again.createTime).toEqual(first.createTime);
    const all = await call(p.acme, "listFineTuningJobs", { pageSize: 0, pageToken: "", filter: "" });
    expect(all.fineTuningJobs.map((j) => j.name)).toEqual(["fineTuningJobs/same"]);
  });

  it("the same request id with another request is INVALID_ARGUMENT REQUEST_ID_REUSED naming the field that differs", async () => {
    await create("reused", jobRequest(p.train, p.evalV), "req-reused");
    const otherRate = jobRequest(p.train, p.evalV);
    otherRate.trainingArguments!.learningRate = 5e-3;
    expect(await fails(create("reused", otherRate, "req-reused"))).toMatchObject({
      code: "INVALID_ARGUMENT",
      reason: "REQUEST_ID_REUSED",
      field: "request_id",
      message: expect.stringContaining("fine_tuning_job.training_arguments.learning_rate"),
    });
    expect(await fails(create("another-id", jobRequest(p.train, p.evalV), "req-reused"))).toMatchObject({ reason: "REQUEST_ID_REUSED", message: expect.stringContaining("fine_tuning_job_id") });
    expect(await fails(create("reused", jobRequest(p.train, p.evalV, { labels: { team: "x" } }), "req-reused"))).toMatchObject({ reason: "REQUEST_ID_REUSED", message: expect.stringContaining("fine_tuning_job.labels") });
    // Nothing was created by the refused calls.
    const names = (await call(p.acme, "listFineTuningJobs", { pageSize: 0, pageToken: "", filter: "" })).fineTuningJobs.map((j) => j.name);
    expect(names).not.toContain("fineTuningJobs/another-id");
  });

  it("two concurrent calls with one request id make one job; a concurrent different request is refused", async () => {
    const job = jobRequest(p.train, p.evalV);
    const [a, b] = await Promise.all([create("", job, "req-race"), create("", job, "req-race")]);
    expect(a.fineTuningJob!.name).toBe(b.fineTuningJob!.name);
    const other = jobRequest(p.train, p.evalV, { displayName: "other" });
    expect(await fails(create("", other, "req-race"))).toMatchObject({ reason: "REQUEST_ID_REUSED", message: expect.stringContaining("fine_tuning_job.display_name") });
  });
});
