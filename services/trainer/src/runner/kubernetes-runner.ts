import { ApiException, BatchV1Api, CoreV1Api, KubeConfig, type V1Job, type V1Pod } from "@kubernetes/client-node";
import { PollingLoop, type Logger } from "@lathe/kit";
import type { JobFailure, JobRow } from "../db/tables.js";
import { jobName } from "../domain/encode.js";
import type { ClaimScope, JobLeases } from "../domain/lease.js";
import { storedSpec } from "../domain/stored-spec.js";
import type { KubernetesOptions } from "./kubernetes-config.js";
import { isTrainingJobName, labelKeys, managedBy, trainingJobManifest, trainingJobName, type PodPaths } from "./job-manifest.js";

/** The two Kubernetes APIs the runner uses. */
export interface KubernetesApis {
  batch: BatchV1Api;
  core: CoreV1Api;
}

/** The APIs of a kubeconfig file's current context, or of the pod's service account (in-cluster). */
export function kubernetesApis(kubeconfig: string | null): KubernetesApis {
  const kc = new KubeConfig();
  if (kubeconfig === null) kc.loadFromCluster();
  else kc.loadFromFile(kubeconfig);
  return { batch: kc.makeApiClient(BatchV1Api), core: kc.makeApiClient(CoreV1Api) };
}

export interface KubernetesRunnerOptions {
  leases: JobLeases;
  logger: Logger;
  apis: KubernetesApis;
  config: KubernetesOptions;
  paths: PodPaths;
  pollMs: number;
  leaseMs: number;
}

/** What the runner makes of an attempt's Job and pod at one look. */
type Verdict =
  | { kind: "pending"; note?: string }
  | { kind: "running" }
  /** The pod's node stopped answering: the lease is left to run out (the pod renews it if it still trains). */
  | { kind: "unhealthy"; note: string }
  | { kind: "failed"; failure: JobFailure }
  /** The pod is gone (eviction, node loss, deleted): the job goes back to the queue and resumes from its checkpoint. */
  | { kind: "lost"; why: string };

interface Attempt {
  row: JobRow;
  name: string;
  sawPod: boolean;
  note: string | undefined;
}

const imagePullReasons = new Set(["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"]);
/** Pod reasons of a pod stopped by the node or the cluster, not by its own training. */
const lostReasons = new Set(["Evicted", "NodeLost", "NodeShutdown", "Shutdown", "Terminated", "Preempting", "UnexpectedAdmissionError"]);

/**
 * Runs jobs as Kubernetes Jobs, one per attempt. It claims a job routed to Kubernetes (GPU jobs,
 * or all with route `all`) with the same lease as a local worker, named after the attempt's Job,
 * creates the Job, and follows it every `pollMs`: while the pod waits or runs it renews the lease
 * (the pod's trainer renews it too, and records progress, checkpoints and the outcome), so a job
 * whose trainer replicas all stop is taken up again once the lease runs out. An image that cannot
 * be pulled, a pod killed for memory, a failed container or a passed deadline fail the job with
 * a reason; a pod evicted, deleted or lost with its node puts the job back in the queue, and the
 * next attempt (a new Job) resumes from its last checkpoint. A cancelled or taken-over job's Job
 * is deleted (its pods in the background).
 */
export class KubernetesRunner {
  private readonly active = new Map<string, Attempt>();
  private readonly loop: PollingLoop;
  private adopted = false;
  private readonly scope: ClaimScope;

  constructor(private readonly o: KubernetesRunnerOptions) {
    this.scope = o.config.route === "all" ? "all" : "gpu";
    this.loop = new PollingLoop({ name: "trainer kubernetes runner: following training Jobs", intervalMs: o.pollMs, logger: o.logger, tick: (signal) => this.tick(signal) });
  }

  async start(): Promise<void> {
    this.loop.start();
  }

  /** Stops following; the Jobs go on (their pods renew their own leases), and a restarted runner adopts them. */
  async stop(): Promise<void> {
    await this.loop.stop();
  }

  /** Look for work now (a job was queued in this process). */
  notify(): void {
    this.loop.notify();
  }

  private get ns() {
    return this.o.config.namespace;
  }

  private async tick(signal: AbortSignal): Promise<void> {
    if (!this.adopted) {
      await this.adopt();
      this.adopted = true;
    }
    for (const a of [...this.active.values()]) {
      if (signal.aborted) return;
      await this.follow(a);
    }
    while (!signal.aborted && this.active.size < this.o.config.maxJobs) {
      if (!(await this.startNext())) return;
    }
  }

  /** Follows the training Jobs an earlier runner (this replica before a restart, or another) left, while their claim holds. */
  private async adopt(): Promise<void> {
    const list = await this.o.apis.batch.listNamespacedJob({ namespace: this.ns, labelSelector: `${labelKeys.managedBy}=${managedBy}` });
    for (const job of list.items) {
      const name = job.metadata?.name ?? "";
      const [tenant, , jobId] = (job.metadata?.annotations?.["lathe.dev/fine-tuning-job-name"] ?? "").split("/");
      const attempt = Number(job.metadata?.labels?.[labelKeys.attempt]);
      if (!tenant || !jobId || !Number.isInteger(attempt) || this.active.has(name)) continue;
      const row = await this.o.leases.attemptRow(tenant, jobId, attempt, name);
      if (row) {
        this.active.set(name, { row, name, sawPod: false, note: undefined });
        this.o.logger.info({ job: jobName(jobId), tenant, attempt, kubernetesJob: name }, "kubernetes runner: following a training Job started before");
      }
    }
  }

  /** Claims the next job routed here and creates its Job; false when none is queued. */
  private async startNext(): Promise<boolean> {
    const claimed = await this.o.leases.claim((t) => trainingJobName(t.tenant, t.jobId, t.attempt), this.o.leaseMs, this.scope);
    if (!claimed) return false;
    const { row, previousWorker } = claimed;
    const name = row.worker;
    const log = this.o.logger.child({ job: jobName(row.job_id), tenant: row.tenant, attempt: row.attempt_count, kubernetesJob: name });
    // Taken over from a lost attempt: its Job, should it still exist, must not train on.
    if (previousWorker !== "" && previousWorker !== name && isTrainingJobName(previousWorker)) await this.deleteJob(previousWorker, log);
    const spec = storedSpec(row);
    const manifest = trainingJobManifest(this.o.config, this.o.paths, { tenant: row.tenant, jobId: row.job_id, attempt: row.attempt_count, gpuCount: spec.compute.gpuCount ?? 0, hardware: spec.compute.hardware });
    try {
      await this.o.apis.batch.createNamespacedJob({ namespace: this.ns, body: manifest });
    } catch (err) {
      if (err instanceof ApiException && err.code === 409) {
        // Made by an earlier try of this very attempt: follow it.
      } else if (err instanceof ApiException && err.code >= 400 && err.code < 500 && err.code !== 429) {
        // The API refused the Job (forbidden, invalid): retrying makes the same Job.
        await this.o.leases.fail(row, name, { code: "FAILED_PRECONDITION", reason: "KUBERNETES_JOB_REFUSED", message: `the Kubernetes API refused the training Job ${name} in namespace ${this.ns} (HTTP ${err.code}): ${apiMessage(err)}` }, 0, 0);
        log.error({ err }, "kubernetes runner: the API refused the training Job; the job failed");
        return true;
      } else {
        // The API is unreachable or busy: the job goes back to the queue, and the runner waits a poll.
        await this.o.leases.release(row, name);
        log.warn({ err }, "kubernetes runner: creating the training Job failed; the job is queued again");
        return false;
      }
    }
    log.info({ gpus: spec.compute.gpuCount ?? 0, resumeFrom: claimed.resumeFrom?.step }, "kubernetes runner: training Job created");
    this.active.set(name, { row, name, sawPod: false, note: undefined });
    return true;
  }

  /** One look at an attempt: its claim, its Job and its pod. */
  private async follow(a: Attempt): Promise<void> {
    const log = this.o.logger.child({ job: jobName(a.row.job_id), tenant: a.row.tenant, attempt: a.row.attempt_count, kubernetesJob: a.name });
    try {
      const now = await this.o.leases.current(a.row);
      if (now === undefined || now.state !== "RUNNING" || now.worker !== a.name) {
        // The pod recorded the outcome (its Job is kept for ttlSecondsAfterFinished), or the job
        // was cancelled or taken over: then its Job must stop.
        if (now === undefined || now.state === "CANCELLED" || now.state === "QUEUED" || now.state === "RUNNING") await this.deleteJob(a.name, log);
        this.active.delete(a.name);
        return;
      }
      const verdict = await this.look(a);
      const step = now.progress?.step ?? 0;
      switch (verdict.kind) {
        case "pending":
        case "running":
          if (verdict.kind === "pending" && verdict.note !== undefined && verdict.note !== a.note) log.info({ note: verdict.note }, "kubernetes runner: the training pod waits");
          a.note = verdict.kind === "pending" ? verdict.note : undefined;
          if (!(await this.o.leases.heartbeat(a.row, a.name, this.o.leaseMs, null))) return; // seen at the next look
          return;
        case "unhealthy":
          if (verdict.note !== a.note) log.warn({ note: verdict.note }, "kubernetes runner: the training pod's node is not ready; its lease is left to run out unless the pod renews it");
          a.note = verdict.note;
          return;
        case "failed":
          log.warn({ failure: verdict.failure }, "kubernetes runner: the training pod failed");
          await this.o.leases.fail(a.row, a.name, verdict.failure, step, 0);
          await this.deleteJob(a.name, log, true);
          this.active.delete(a.name);
          return;
        case "lost":
          await this.deleteJob(a.name, log);
          if (now.attempt_count >= this.o.config.maxAttempts) {
            await this.o.leases.fail(
              a.row,
              a.name,
              { code: "UNAVAILABLE", reason: "PODS_LOST", message: `the job's training pod was lost ${now.attempt_count} times (LATHE_TRAINER_K8S_MAX_ATTEMPTS), the last time because ${verdict.why}; its checkpoints are kept` },
              step,
              0,
            );
            log.warn({ why: verdict.why }, "kubernetes runner: training pod lost again; the job failed");
          } else {
            await this.o.leases.release(a.row, a.name);
            log.warn({ why: verdict.why, step }, "kubernetes runner: training pod lost; the job is queued again and resumes from its last checkpoint");
          }
          this.active.delete(a.name);
          return;
      }
    } catch (err) {
      log.warn({ err }, "kubernetes runner: following the training Job failed; trying again at the next look");
    }
  }

  /** Reads the Job and its newest pod and says what they mean. */
  private async look(a: Attempt): Promise<Verdict> {
    let job: V1Job;
    try {
      job = await this.o.apis.batch.readNamespacedJob({ name: a.name, namespace: this.ns });
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return { kind: "lost", why: `its Kubernetes Job ${a.name} was deleted` };
      throw err;
    }
    const pods = await this.o.apis.core.listNamespacedPod({ namespace: this.ns, labelSelector: `${labelKeys.trainingJob}=${a.name}` });
    const pod = pods.items.sort((x, y) => time(y.metadata?.creationTimestamp) - time(x.metadata?.creationTimestamp))[0];
    const failedCondition = job.status?.conditions?.find((c) => c.type === "Failed" && c.status === "True");
    if (failedCondition?.reason === "DeadlineExceeded") {
      return { kind: "failed", failure: { code: "DEADLINE_EXCEEDED", reason: "TRAINING_DEADLINE_EXCEEDED", message: `the training pod ran longer than ${this.o.config.activeDeadlineSeconds} s (LATHE_TRAINER_K8S_ACTIVE_DEADLINE_SECONDS) and Kubernetes stopped it; its checkpoints are kept` } };
    }
    if (!pod) {
      if (a.sawPod) return { kind: "lost", why: `its pod was deleted (Job ${a.name})` };
      if (failedCondition) return { kind: "failed", failure: { code: "INTERNAL", reason: "TRAINING_JOB_FAILED", message: `the training Job ${a.name} failed before its pod started: ${failedCondition.reason ?? ""} ${failedCondition.message ?? ""}`.trim() } };
      return { kind: "pending", note: "the Job has no pod yet" };
    }
    a.sawPod = true;
    return this.judgePod(pod);
  }

  private judgePod(pod: V1Pod): Verdict {
    const status = pod.status ?? {};
    const container = status.containerStatuses?.find((c) => c.name === "train") ?? status.containerStatuses?.[0];
    const disruption = status.conditions?.find((c) => c.type === "DisruptionTarget" && c.status === "True");
    const image = pod.spec?.containers[0]?.image ?? this.o.config.image;
    if (disruption) return { kind: "lost", why: `Kubernetes stopped its pod ${pod.metadata?.name} (${disruption.reason ?? "disruption"}: ${disruption.message ?? ""})` };
    if (status.reason !== undefined && lostReasons.has(status.reason)) return { kind: "lost", why: `its pod ${pod.metadata?.name} was ${status.reason}${status.message ? `: ${status.message}` : ""}` };
    if (pod.metadata?.deletionTimestamp) return { kind: "lost", why: `its pod ${pod.metadata.name} is being deleted` };
    const waiting = container?.state?.waiting;
    if (waiting?.reason !== undefined && imagePullReasons.has(waiting.reason)) {
      return {
        kind: "failed",
        failure: { code: "FAILED_PRECONDITION", reason: "IMAGE_PULL_FAILED", message: `the training pod could not pull its image ${image} (${waiting.reason}${waiting.message ? `: ${waiting.message}` : ""}); check LATHE_TRAINER_K8S_IMAGE and LATHE_TRAINER_K8S_IMAGE_PULL_SECRETS` },
      };
    }
    if (waiting?.reason === "CreateContainerConfigError" || waiting?.reason === "CreateContainerError") {
      return { kind: "failed", failure: { code: "FAILED_PRECONDITION", reason: "POD_CONFIG_INVALID", message: `the training pod could not start its container (${waiting.reason}: ${waiting.message ?? ""}); check LATHE_TRAINER_K8S_ENV and LATHE_TRAINER_K8S_ENV_FROM` } };
    }
    const terminated = container?.state?.terminated ?? (status.phase === "Failed" ? container?.lastState?.terminated : undefined);
    if (status.phase === "Failed" || status.phase === "Succeeded") {
      if (terminated?.reason === "OOMKilled") {
        const limit = pod.spec?.containers[0]?.resources?.limits?.["memory"];
        return {
          kind: "failed",
          failure: {
            code: "RESOURCE_EXHAUSTED",
            reason: "POD_OUT_OF_MEMORY",
            message: `the training pod ran out of memory (${limit === undefined ? "no memory limit: the node's memory" : `limit ${limit}`}) and was killed; lower per_device_train_batch_size or max_seq_length, turn on gradient_checkpointing, use QLoRA, or raise the memory in LATHE_TRAINER_K8S_RESOURCES`,
          },
        };
      }
      if (status.reason === "DeadlineExceeded") {
        return { kind: "failed", failure: { code: "DEADLINE_EXCEEDED", reason: "TRAINING_DEADLINE_EXCEEDED", message: `the training pod ran longer than ${this.o.config.activeDeadlineSeconds} s (LATHE_TRAINER_K8S_ACTIVE_DEADLINE_SECONDS) and Kubernetes stopped it; its checkpoints are kept` } };
      }
      if (status.phase === "Succeeded" || terminated?.exitCode === 0) return { kind: "lost", why: `its pod ${pod.metadata?.name} ended without recording an outcome` };
      const tail = (terminated?.message ?? "").trim().split("\n").slice(-5).join("\n");
      return {
        kind: "failed",
        failure: { code: "INTERNAL", reason: "TRAINING_POD_FAILED", message: `the training pod exited with code ${terminated?.exitCode ?? "unknown"}${terminated?.reason ? ` (${terminated.reason})` : ""}${tail === "" ? "" : `: ${tail}`}` },
      };
    }
    if (status.phase === "Running") {
      const ready = status.conditions?.find((c) => c.type === "Ready");
      // No readiness probe: a running container is Ready unless its node stopped reporting.
      if (container?.state?.running && ready?.status === "False") return { kind: "unhealthy", note: `pod ${pod.metadata?.name} is not ready on node ${pod.spec?.nodeName ?? "?"}${ready.reason ? ` (${ready.reason})` : ""}` };
      return { kind: "running" };
    }
    const scheduled = status.conditions?.find((c) => c.type === "PodScheduled");
    if (scheduled?.status === "False") return { kind: "pending", note: `not scheduled yet: ${scheduled.message ?? scheduled.reason ?? ""}` };
    return { kind: "pending", note: waiting?.reason };
  }

  /** Deletes a training Job and (in the background) its pods; one already gone is fine. With `ifActive`, a finished Job is kept for inspection. */
  private async deleteJob(name: string, log: Logger, ifActive = false): Promise<void> {
    try {
      if (ifActive) {
        const job = await this.o.apis.batch.readNamespacedJob({ name, namespace: this.ns });
        if (job.status?.conditions?.some((c) => (c.type === "Failed" || c.type === "Complete") && c.status === "True")) return;
      }
      await this.o.apis.batch.deleteNamespacedJob({ name, namespace: this.ns, propagationPolicy: "Background" });
      log.info({ deleted: name }, "kubernetes runner: training Job deleted");
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return;
      log.warn({ err, name }, "kubernetes runner: deleting the training Job failed; its deadline or its lost claim ends it");
    }
  }
}

const time = (t: Date | string | undefined) => (t === undefined ? 0 : new Date(t).getTime());

/** The message of a Kubernetes API error: its Status's message when it sent one. */
function apiMessage(err: ApiException<unknown>): string {
  const body = err.body;
  if (typeof body === "string") {
    try {
      return (JSON.parse(body) as { message?: string }).message ?? body;
    } catch {
      return body;
    }
  }
  return (body as { message?: string } | undefined)?.message ?? err.message;
}
