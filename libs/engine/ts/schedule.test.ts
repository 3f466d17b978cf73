// Expected values are HF transformers' formulas (get_cosine_schedule_with_warmup,
// get_linear_schedule_with_warmup, get_constant_schedule_with_warmup) evaluated in Python.
import { describe, expect, it } from "vitest";
import { lrAt, warmupSteps, type SchedulerName } from "./schedule.js";

const base = { baseLr: 2e-4, totalSteps: 100, warmupSteps: 3 };
const at = (scheduler: SchedulerName, step: number) => lrAt(step, { ...base, scheduler });

describe("lrAt", () => {
  it("warms up linearly from 0 over the warmup steps, for every scheduler", () => {
    for (const s of ["constant", "linear", "cosine"] as const) {
      expect(at(s, 0)).toBe(0);
      expect(at(s, 1)).toBeCloseTo(6.666666666666667e-5, 15);
      expect(at(s, 2)).toBeCloseTo(1.3333333333333334e-4, 15);
      expect(at(s, 3)).toBeCloseTo(2e-4, 15);
    }
  });

  it("cosine decays as HF's half cosine to 0 at the last step", () => {
    expect(at("cosine", 50)).toBeCloseTo(1.0485622221144484e-4, 15);
    expect(at("cosine", 99)).toBeCloseTo(5.2443095448506674e-8, 18);
    expect(at("cosine", 100)).toBe(0);
  });

  it("linear decays to 0 at the last step", () => {
    expect(at("linear", 50)).toBeCloseTo(1.0309278350515463e-4, 15);
    expect(at("linear", 99)).toBeCloseTo(2.061855670103093e-6, 16);
    expect(at("linear", 100)).toBe(0);
  });

  it("constant stays at the base lr after warmup", () => {
    expect(at("constant", 50)).toBe(2e-4);
    expect(at("constant", 99)).toBe(2e-4);
  });

  it("without warmup the first step has the full lr", () => {
    expect(lrAt(0, { ...base, warmupSteps: 0, scheduler: "cosine" })).toBe(2e-4);
  });
});

describe("warmupSteps", () => {
  it("is ceil(ratio × total steps), as HF's get_warmup_steps", () => {
    expect(warmupSteps(0.03, 100)).toBe(3);
    expect(warmupSteps(0.03, 30)).toBe(1);
    expect(warmupSteps(0.1, 25)).toBe(3);
    expect(warmupSteps(0, 25)).toBe(0);
    expect(() => warmupSteps(1.5, 10)).toThrow(/warmupRatio/);
  });
});
