import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AppError, call, createClient } from "@lathe/kit";
import { TrainerServiceClient } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { startTestPlatform, testKeys, type TestPlatform } from "@lathe/testing";
import { trainerService } from "../src/index.js";
import { fails, options } from "./support.js";

/** Fuzz runs: LATHE_FUZZ_RUNS, default 200; a fixed seed so a failure reproduces. */
const runs = Number(process.env["LATHE_FUZZ_RUNS"] ?? 200);

describe("ListFineTuningJobs filters against Postgres", () => {
  let t: TestPlatform;
  let acme: TrainerServiceClient;
  beforeAll(async () => {
    t = await startTestPlatform({ factories: [trainerService(options(0))] });
    acme = createClient(TrainerServiceClient, t.address, { apiKey: testKeys.acme });
  });
  afterAll(async () => {
    acme?.close();
    await t?.stop();
  });
  const list = (filter: string) => call(acme, "listFineTuningJobs", { pageSize: 0, pageToken: "", filter });

  it("a NUL in a filter is INVALID_ARGUMENT on filter, not a Postgres error", async () => {
    expect(await fails(list('labels.team = "a\u0000b"'))).toMatchObject({ code: "INVALID_ARGUMENT", field: "filter", message: expect.stringContaining("control character U+0000") });
  });

  it("a filter of 20,000 comparisons is INVALID_ARGUMENT on filter, not a stack overflow", async () => {
    const huge = Array.from({ length: 20_000 }, (_, i) => `labels.k${i % 10} != "v"`).join(" AND ");
    expect(await fails(list(huge))).toMatchObject({ code: "INVALID_ARGUMENT", field: "filter", message: expect.stringContaining("the limit is 2000") });
    const many = Array.from({ length: 21 }, () => "state != STATE_FAILED").join(" AND ");
    expect(await fails(list(many))).toMatchObject({ code: "INVALID_ARGUMENT", field: "filter", message: expect.stringContaining("the limit is 20") });
    expect((await list(Array.from({ length: 20 }, () => "state != STATE_FAILED").join(" AND "))).fineTuningJobs).toEqual([]);
  });

  it("fuzzed filters give a page or INVALID_ARGUMENT on filter, never another error", async () => {
    const piece = fc.constantFrom("state = STATE_RUNNING", 'labels.team = "', 'base_model = "models/x"', " AND ", '\\"', "\u0000", "\u00ff", "\ud83d\ude00", "\ud800", "'; drop table jobs; --", "%", "$1", " ");
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.fullUnicodeString({ maxLength: 120 }), fc.array(piece, { maxLength: 30 }).map((p) => p.join(""))), async (filter) => {
        try {
          await list(filter);
        } catch (err) {
          if (!(err instanceof AppError) || err.code !== "INVALID_ARGUMENT" || err.field !== "filter") throw err;
        }
      }),
      { numRuns: runs, seed: 20260110 },
    );
  }, 120_000);
});
