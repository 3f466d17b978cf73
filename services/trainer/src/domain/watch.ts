import type { FineTuningJob } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { resourceId } from "@lathe/kit";
import { jobCollection, states, terminal } from "./encode.js";
import type { JobStore } from "./job-store.js";

/** What a watcher tells apart: a job's state, its last update, its step, its adapter version. */
const stamp = (j: FineTuningJob) => `${j.state}|${j.updateTime?.getTime()}|${j.progress?.step}|${j.adapterVersion}`;

/**
 * A job now, then each time it changes, until it ends (succeeded, failed, cancelled) or `signal`
 * aborts. Changes made in this process wake the watch at once; those of other processes are seen
 * by looking every `pollMs`.
 */
export async function* watchJob(jobs: JobStore, tenant: string, name: string, signal: AbortSignal, pollMs: number): AsyncGenerator<FineTuningJob> {
  let job: FineTuningJob = await jobs.get(tenant, name);
  yield job;
  const key = `${tenant}/${resourceId(name, jobCollection)}`;
  const aborted = new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true }));
  const nextChange = async () => {
    let onChange: ((k: string) => void) | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        new Promise<void>((r) => {
          onChange = (k: string) => k === key && r();
          jobs.changes.on("changed", onChange);
        }),
        new Promise<void>((r) => (timer = setTimeout(r, pollMs))),
        aborted,
      ]);
    } finally {
      if (onChange) jobs.changes.off("changed", onChange);
      clearTimeout(timer);
    }
  };
  while (!signal.aborted && !terminal.some((s) => job.state === states[s])) {
    await nextChange();
    if (signal.aborted) return;
    const next = await jobs.get(tenant, name);
    if (stamp(next) !== stamp(job)) yield next;
    job = next;
  }
}
