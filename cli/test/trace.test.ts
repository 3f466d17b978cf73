import type { StoredSpan } from "@lathe/kit";
import { describe, expect, it } from "vitest";
import { spanTree } from "../src/commands/trace.js";

const span = (spanId: string, parentSpanId: string, name: string, service: string, startMs: number, durationMs: number, status: "ok" | "error" = "ok"): StoredSpan => ({ traceId: "t", spanId, parentSpanId, name, service, startMs, durationMs, status, attributes: {} });

describe("spanTree", () => {
  it("nests spans under their parents in start order, with service, offset and duration; orphans start trees; alike leaves are counted", () => {
    const spans = [
      span("b", "a", "trainer.train_job", "trainer", 1100, 20_000),
      span("a", "", "lathe.trainer.v1.TrainerService/CreateFineTuningJob", "trainer", 1000, 38.25),
      ...Array.from({ length: 6 }, (_, i) => span(`p${i}`, "b", "consume lathe.trainer.v1.fine_tuning_job_progressed", "gateway", 2000 + i * 100, 2)),
      span("c", "b", "consume lathe.trainer.v1.fine_tuning_job_succeeded", "registry", 21_200, 4),
      span("x", "gone", "POST /v1/chat/completions", "gateway", 30_000, 512, "error"),
    ];
    expect(spanTree(spans)).toBe(
      [
        "lathe.trainer.v1.TrainerService/CreateFineTuningJob  [trainer]  +0.0 ms  38.3 ms",
        "  trainer.train_job  [trainer]  +100.0 ms  20.00 s",
        "    consume lathe.trainer.v1.fine_tuning_job_progressed  [gateway]  +1.00 s  2.0 ms",
        "    consume lathe.trainer.v1.fine_tuning_job_progressed  [gateway]  +1.10 s  2.0 ms",
        "    … 4 more consume lathe.trainer.v1.fine_tuning_job_progressed  [gateway]  8.0 ms in all",
        "    consume lathe.trainer.v1.fine_tuning_job_succeeded  [registry]  +20.20 s  4.0 ms",
        "POST /v1/chat/completions  [gateway]  +29.00 s  512.0 ms  ERROR",
        "",
      ].join("\n"),
    );
    expect(spanTree([])).toBe("");
  });
});
