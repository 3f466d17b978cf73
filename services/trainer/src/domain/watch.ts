import type { FineTuningJob } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { resourceId, watchResource } from "@lathe/kit";
import { jobCollection, states, terminal } from "./encode.js";
import type { JobStore } from "./job-store.js";

/** What a watcher tells apart: a job's state, its last update, its step, its adapter version. */
const stamp = (j: FineTuningJob) => `${j.state}|${j.updateTime?.getTime()}|${j.progress?.step}|${j.adapterVersion}`;

/**
 * A job now, then each time it changes, until it ends (succeeded, failed, cancelled) or `signal`
 * aborts. Changes made in this process wake the watch at once; those of other processes are seen
 * by looking every `pollMs`.
 */
export function watchJob(jobs: JobStore, tenant: string, name: string, signal: AbortSignal, pollMs: number): AsyncGenerator<FineTuningJob> {
  return watchResource({
    get: () => jobs.get(tenant, name),
    key: `${tenant}/${resourceId(name, jobCollection)}`,
    changes: jobs.changes,
    stamp,
    done: (job) => terminal.some((s) => job.state === states[s]),
    signal,
    pollMs,
  });
}
