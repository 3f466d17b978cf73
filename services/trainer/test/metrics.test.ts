// "Metrics users expect" on real Postgres, NATS and gRPC: checkpoints and the result carry train
// and eval loss and mean token accuracy; the logged steps come back as rows, CSV and a TensorBoard
// event file (read back by a Python reader of its own); the finished job shows its estimate
// against what it took, and the next estimate of that shape uses the throughput it measured; the
// trainer's Prometheus endpoint reports queue depth, running jobs, throughput and outcomes.
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, type RunningPlatform } from "@lathe/kit";
import { FineTuningJob_State as State, MetricsFormat, type FineTuningJob, type FineTuningMetricsRow } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { freePort, waitFor } from "@lathe/testing";
import { fails, jobRequest, startTrainerTestPlatform, type TrainerTestPlatform } from "./support.js";

/**
 * A TensorBoard event file reader that shares nothing with the trainer: TFRecord frames checked
 * with its own CRC-32C, protobuf fields parsed by hand. Prints the events as JSON.
 */
const reader = String.raw`
import json, struct, sys

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF

def masked(data):
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF

def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]; i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i

def fields(buf):
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 1:
            value = buf[i:i + 8]; i += 8
        elif wire == 5:
            value = buf[i:i + 4]; i += 4
        elif wire == 2:
            n, i = varint(buf, i)
            value = buf[i:i + n]; i += n
        else:
            raise ValueError("wire type %d" % wire)
        yield number, wire, value

events = []
data = open(sys.argv[1], "rb").read()
pos = 0
while pos < len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
    assert length_crc == masked(header), "length crc at %d" % pos
    record = data[pos + 12:pos + 12 + length]
    (data_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
    assert data_crc == masked(record), "data crc at %d" % pos
    pos += 16 + length
    event = {"scalars": {}}
    for number, wire, value in fields(record):
        if number == 1: event["wall_time"] = struct.unpack("<d", value)[0]
        elif number == 2: event["step"] = value
        elif number == 3: event["file_version"] = value.decode()
        elif number == 5:
            for n, _, v in fields(value):
                if n != 1: continue
                tag = simple = None
                for vn, _, vv in fields(v):
                    if vn == 1: tag = vv.decode()
                    elif vn == 2: simple = struct.unpack("<f", vv)[0]
                event["scalars"][tag] = simple
    events.append(event)
print(json.dumps(events))
`;

interface ReadEvent {
  wall_time: number;
  step?: number;
  file_version?: string;
  scalars: Record<string, number>;
}

describe("TrainerService: metrics users expect", () => {
  let p: TrainerTestPlatform;
  let worker: RunningPlatform | undefined;
  let metricsUrl = "";
  let job: FineTuningJob;
  let rows: FineTuningMetricsRow[];
  const scrape = async () => (await fetch(metricsUrl)).text();

  // 16 train rows, 4 per step, 2 epochs: 8 steps; logged every 2, evaluated every 3 (and after the last), saved every 2.
  const request = () =>
    jobRequest(p.train, p.evalV, {
      trainingArguments: { numTrainEpochs: 2, perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 1, learningRate: 1e-2, warmupRatio: 0, maxSeqLength: 128, packing: false, loggingSteps: 2, evalSteps: 3, saveSteps: 2 },
    });

  beforeAll(async () => {
    const port = await freePort();
    p = await startTrainerTestPlatform({ LATHE_TRAINER_METRICS_PORT: port, LATHE_TRAINER_METRICS_HOST: "127.0.0.1" });
    metricsUrl = `http://127.0.0.1:${port}/metrics`;
    worker = await p.startWorker();
    const created = await call(p.acme, "createFineTuningJob", { fineTuningJobId: "measured", fineTuningJob: request(), requestId: "" });
    const seen = await p.watch(created.fineTuningJob!.name);
    job = seen.at(-1)!;
    expect(job.error).toBeUndefined();
    expect(job.state).toBe(State.STATE_SUCCEEDED);
    rows = (await call(p.acme, "getFineTuningJobMetrics", { name: job.name, format: MetricsFormat.METRICS_FORMAT_UNSPECIFIED })).rows;
  }, 60_000);
  afterAll(async () => {
    await worker?.stop();
    await p?.stop();
  });

  it("keeps one row per logged step, with train and eval loss and mean token accuracy where they were measured", () => {
    // Logged: every 2 steps, and the steps evaluated (3, 6, and the last).
    expect(rows.map((r) => r.step)).toEqual([2, 3, 4, 6, 8]);
    expect(rows.map((r) => r.evalLoss !== undefined)).toEqual([false, true, false, true, true]);
    expect(rows.map((r) => r.evalMeanTokenAccuracy !== undefined)).toEqual([false, true, false, true, true]);
    for (const r of rows) {
      expect(r.trainLoss).toBeGreaterThan(0);
      expect(r.trainMeanTokenAccuracy).toBeGreaterThanOrEqual(0);
      expect(r.trainMeanTokenAccuracy).toBeLessThanOrEqual(1);
      expect(r.learningRate).toBeGreaterThan(0);
      expect(r.gradNorm).toBeGreaterThan(0);
      expect(r.tokensPerSecond).toBeGreaterThan(0);
      expect(r.epoch).toBeCloseTo(r.step / 4, 10);
    }
    expect(rows.map((r) => r.processedTokens)).toEqual([...rows.map((r) => r.processedTokens)].sort((a, b) => a - b));
  });

  it("puts train and eval loss and mean token accuracy on each checkpoint, the progress and the result", async () => {
    const { checkpoints } = await call(p.acme, "listCheckpoints", { parent: job.name, pageSize: 0, pageToken: "" });
    expect(checkpoints.map((c) => c.step)).toEqual([2, 4, 6, 8]);
    for (const c of checkpoints) {
      expect(c.meanTokenAccuracy).toBeGreaterThanOrEqual(0);
      expect(c.meanTokenAccuracy).toBeLessThanOrEqual(1);
    }
    // Evaluated at 3, 6 and 8: the checkpoints of 6 and 8 carry that evaluation, those of 2 and 4 none.
    const byStep = new Map(rows.map((r) => [r.step, r]));
    expect(checkpoints.map((c) => c.evalMeanTokenAccuracy)).toEqual([undefined, undefined, byStep.get(6)!.evalMeanTokenAccuracy, byStep.get(8)!.evalMeanTokenAccuracy]);
    expect(checkpoints.map((c) => c.evalLoss)).toEqual([undefined, undefined, byStep.get(6)!.evalLoss, byStep.get(8)!.evalLoss]);

    const r = job.result!;
    expect(r.finalMeanTokenAccuracy).toBe(byStep.get(8)!.trainMeanTokenAccuracy);
    expect(r.finalEvalMeanTokenAccuracy).toBe(byStep.get(8)!.evalMeanTokenAccuracy);
    expect(r.finalEvalLoss).toBe(byStep.get(8)!.evalLoss);
    expect(job.progress!.meanTokenAccuracy).toBe(byStep.get(8)!.trainMeanTokenAccuracy);
    expect(job.progress!.evalMeanTokenAccuracy).toBe(byStep.get(8)!.evalMeanTokenAccuracy);

    // Estimate against actual: what the estimate said for cpu, and what the job took.
    const planned = job.estimate!.hardwareEstimates.find((h) => h.hardware === "cpu")!;
    expect(r.estimatedDuration).toEqual(planned.duration);
    expect(r.estimatedTokensPerSecond).toBe(planned.tokensPerSecond);
    expect(r.estimatedTokensPerSecondSource).toBe("cost table");
    expect(r.tokensPerSecond).toBe(byStep.get(8)!.tokensPerSecond);
    // Every token of both epochs, as the estimate counted them.
    expect(r.processedTokens).toBe(job.estimate!.totalTokens);
  });

  it("returns the rows as CSV", async () => {
    const csv = await call(p.acme, "getFineTuningJobMetrics", { name: job.name, format: MetricsFormat.METRICS_FORMAT_CSV });
    expect(csv.fileName).toBe("metrics.csv");
    expect(csv.contentType).toBe("text/csv");
    const [header, ...lines] = csv.content.toString().trimEnd().split("\n");
    expect(header).toBe("step,epoch,train_loss,eval_loss,learning_rate,grad_norm,tokens_per_second,processed_tokens,train_mean_token_accuracy,eval_mean_token_accuracy,log_time");
    const parsed = lines.map((l) => l.split(","));
    const num = (c: string) => (c === "" ? undefined : Number(c));
    expect(parsed.map((c) => ({ step: num(c[0]!), trainLoss: num(c[2]!), evalLoss: num(c[3]!), learningRate: num(c[4]!), trainMeanTokenAccuracy: num(c[8]!), evalMeanTokenAccuracy: num(c[9]!) }))).toEqual(
      rows.map((r) => ({ step: r.step, trainLoss: r.trainLoss, evalLoss: r.evalLoss, learningRate: r.learningRate, trainMeanTokenAccuracy: r.trainMeanTokenAccuracy, evalMeanTokenAccuracy: r.evalMeanTokenAccuracy })),
    );
    expect(parsed.map((c) => new Date(c[10]!).getTime())).toEqual(rows.map((r) => r.logTime!.getTime()));
  });

  it("writes a TensorBoard event file that an independent reader reads back, CRCs checked", async () => {
    const tb = await call(p.acme, "getFineTuningJobMetrics", { name: job.name, format: MetricsFormat.METRICS_FORMAT_TENSORBOARD });
    expect(tb.fileName).toMatch(/^events\.out\.tfevents\.\d{10}\.\S+$/);
    expect(Number(tb.fileName.split(".")[3])).toBe(Math.floor(job.startTime!.getTime() / 1000));
    const file = join(p.dir, tb.fileName);
    const script = join(p.dir, "read_events.py");
    writeFileSync(file, tb.content);
    writeFileSync(script, reader);
    const events = JSON.parse(execFileSync("/usr/bin/python3", [script, file], { encoding: "utf8" })) as ReadEvent[];
    expect(events[0]).toMatchObject({ file_version: "brain.Event:2", scalars: {} });
    const logged = events.slice(1);
    expect(logged.map((e) => e.step)).toEqual(rows.map((r) => r.step));
    for (const [i, e] of logged.entries()) {
      const r = rows[i]!;
      // Scalars are float32 in TensorBoard.
      expect(e.wall_time).toBeCloseTo(r.logTime!.getTime() / 1000, 3);
      expect(e.scalars["train/loss"]).toBeCloseTo(r.trainLoss, 5);
      expect(e.scalars["train/learning_rate"]).toBeCloseTo(r.learningRate, 7);
      expect(e.scalars["train/grad_norm"]).toBeCloseTo(r.gradNorm, 4);
      expect(e.scalars["train/epoch"]).toBeCloseTo(r.epoch, 6);
      expect(e.scalars["train/mean_token_accuracy"]).toBeCloseTo(r.trainMeanTokenAccuracy!, 6);
      expect(e.scalars["eval/loss"] === undefined).toBe(r.evalLoss === undefined);
      if (r.evalLoss !== undefined) {
        expect(e.scalars["eval/loss"]).toBeCloseTo(r.evalLoss, 5);
        expect(e.scalars["eval/mean_token_accuracy"]).toBeCloseTo(r.evalMeanTokenAccuracy!, 6);
      }
    }
  });

  it("refuses an unknown format naming the field, and an unknown job", async () => {
    expect(await fails(call(p.acme, "getFineTuningJobMetrics", { name: job.name, format: 9 as MetricsFormat }))).toMatchObject({ code: "INVALID_ARGUMENT", field: "format" });
    expect(await fails(call(p.acme, "getFineTuningJobMetrics", { name: "fineTuningJobs/nope", format: MetricsFormat.METRICS_FORMAT_CSV }))).toMatchObject({ code: "NOT_FOUND" });
  });

  it("estimates a job of the same shape from the throughput measured, and says so", async () => {
    const { estimate } = await call(p.acme, "estimateFineTuningJob", { fineTuningJob: request(), hardware: ["cpu", "nvidia-a100-40gb"] });
    const cpu = estimate!.hardwareEstimates.find((h) => h.hardware === "cpu")!;
    expect(cpu).toMatchObject({ tokensPerSecondSource: "measured on 1 past job", measuredJobCount: 1, tokensPerSecond: job.result!.tokensPerSecond });
    expect(cpu.duration!.seconds).toBe(Math.ceil(estimate!.totalTokens / job.result!.tokensPerSecond));
    expect(estimate!.hardwareEstimates.find((h) => h.hardware === "nvidia-a100-40gb")).toMatchObject({ tokensPerSecondSource: "cost table", measuredJobCount: 0 });
    // Sequences over twice as long are another shape: the cost table again.
    const longer = request();
    longer.trainingArguments!.maxSeqLength = 512;
    const other = await call(p.acme, "estimateFineTuningJob", { fineTuningJob: longer, hardware: ["cpu"] });
    expect(other.estimate!.hardwareEstimates[0]).toMatchObject({ tokensPerSecondSource: "cost table", measuredJobCount: 0 });
  });

  it("serves Prometheus metrics: queue depth, running jobs, throughput and outcomes per tenant", async () => {
    expect(await scrape()).toMatch(/\nlathe_trainer_jobs_finished_total\{tenant="acme",outcome="succeeded"\} 1\n/);
    expect((await fetch(metricsUrl.replace("/metrics", "/other"))).status).toBe(404);
    // No worker: a new job waits in the queue.
    await worker!.stop();
    worker = undefined;
    const long = request();
    long.trainingArguments!.numTrainEpochs = 100;
    long.trainingArguments!.perDeviceTrainBatchSize = 1;
    const { fineTuningJob: queued } = await call(p.acme, "createFineTuningJob", { fineTuningJobId: "long", fineTuningJob: long, requestId: "" });
    const waiting = await scrape();
    expect(waiting).toMatch(/\nlathe_trainer_queue_depth\{tenant="acme"\} 1\n/);
    expect(waiting).toMatch(/# TYPE lathe_trainer_jobs_running gauge\n/);
    expect(waiting).toMatch(/\nlathe_trainer_jobs_running\{tenant="acme"\} 0\n/);
    // A worker takes it: running, with a throughput once it logged a step.
    worker = await p.startWorker();
    const running = await waitFor(
      async () => {
        const text = await scrape();
        return /\nlathe_trainer_jobs_running\{tenant="acme"\} 1\n/.test(text) && /\nlathe_trainer_tokens_per_second\{tenant="acme"\} [1-9]/.test(text) ? text : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100, what: "the long job running with a throughput" },
    );
    expect(running).toMatch(/\nlathe_trainer_queue_depth\{tenant="acme"\} 0\n/);
    await call(p.acme, "cancelFineTuningJob", { name: queued!.name, reason: "enough" });
    const ended = await scrape();
    expect(ended).toMatch(/\nlathe_trainer_jobs_finished_total\{tenant="acme",outcome="cancelled"\} 1\n/);
    expect(ended).toMatch(/\nlathe_trainer_jobs_finished_total\{tenant="acme",outcome="succeeded"\} 1\n/);
    expect(ended).toMatch(new RegExp(`\\nlathe_trainer_tokens_trained_total\\{tenant="acme"\\} ${job.result!.processedTokens}\\n`));
  }, 45_000);
});
