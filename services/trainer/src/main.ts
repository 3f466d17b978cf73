#!/usr/bin/env node
import { runMain } from "@lathe/kit";
import { configSchema, createTrainerService, runTrainJob } from "./index.js";
import { migrations } from "./db/migrations.js";
import { schema } from "./db/tables.js";

if (process.argv[2] === "train-job") {
  // A training pod (see runner/train-job.ts): one attempt of one job, then exit. SIGTERM (the pod
  // is stopped) gives the job back to the queue within a step.
  const stop = new AbortController();
  process.once("SIGTERM", () => stop.abort());
  process.once("SIGINT", () => stop.abort());
  try {
    process.exitCode = await runTrainJob(process.argv.slice(3), process.env, { signal: stop.signal });
  } catch (err) {
    console.error(`lathe-trainer train-job: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
} else {
  await runMain({ name: "trainer", configSchema, factory: createTrainerService, schema: { name: schema, migrations } });
}
