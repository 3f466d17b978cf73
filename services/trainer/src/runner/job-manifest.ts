import { createHash } from "node:crypto";
import type { V1Affinity, V1EnvVar, V1Job } from "@kubernetes/client-node";
import type { KubernetesOptions } from "./kubernetes-config.js";

/* The batch/v1 Job of one attempt of a fine-tuning job: its name, labels and manifest. */

/** The trainer's entry in the image (ENTRYPOINT node), as the chart's Deployments run it. */
export const trainerEntry = "services/trainer/dist/main.js";

/** Labels every training Job and its pod carry. */
export const labelKeys = {
  managedBy: "app.kubernetes.io/managed-by",
  tenant: "lathe.dev/tenant",
  job: "lathe.dev/fine-tuning-job",
  attempt: "lathe.dev/attempt",
  /** The training Job's own name, on its pod: how the runner finds the pod. */
  trainingJob: "lathe.dev/training-job",
} as const;
export const managedBy = "lathe-trainer";

/** One attempt of a job, as the runner starts it. */
export interface AttemptTarget {
  tenant: string;
  jobId: string;
  attempt: number;
  /** The GPUs the job asks for (compute.gpu_count); 0 for a CPU job. */
  gpuCount: number;
  /** The cost table's hardware type, shown on the Job. */
  hardware: string;
}

/**
 * The Kubernetes Job's name of an attempt: `lathe-ft-<job id, shortened>-<hash of tenant and job>-a<attempt>`.
 * It is also the attempt's worker name in the job's row. Two tenants may have jobs of one id, so
 * the hash tells them apart; the whole stays a DNS label (63 characters at most).
 */
export function trainingJobName(tenant: string, jobId: string, attempt: number): string {
  const slug = jobId.replace(/[._]/g, "-").slice(0, 30).replace(/-+$/, "");
  const hash = createHash("sha256").update(`${tenant}/${jobId}`).digest("hex").slice(0, 8);
  return `lathe-ft-${slug === "" ? "job" : slug}-${hash}-a${attempt}`;
}

/** Whether a worker name is a training Job's (so a claim that takes over from it deletes it). */
export const isTrainingJobName = (worker: string) => /^lathe-ft-[a-z0-9-]+-[0-9a-f]{8}-a\d+$/.test(worker);

/** A label value as Kubernetes allows it (63 characters, alphanumeric at both ends), or a hash of it. */
function labelValue(s: string): string {
  if (/^[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?$/.test(s)) return s;
  return createHash("sha256").update(s).digest("hex").slice(0, 16);
}

/** Paths the pod sees as the trainer does, so its environment reads the same. */
export interface PodPaths {
  /** The trainer's LATHE_DATA_DIR: an emptyDir in the pod (work folders, model cache). */
  dataDir: string;
  /** The trainer's LATHE_ARTIFACTS_DIR: where the artifacts claim is mounted. */
  artifactsDir: string;
  /** The trainer's LATHE_TRAINER_GPU_DEVICE: the engine device a GPU job's pod trains on. Default cuda. */
  gpuDevice?: "cuda" | "cpu";
}

/**
 * The Job of one attempt: the trainer image running `train-job` for exactly this job and
 * attempt, on the GPU node pool (nodeSelector, tolerations, affinity), with the job's GPUs as
 * limits, `backoffLimit: 0` (the trainer retries, from a checkpoint, as a new attempt),
 * the deadline and the time a finished Job is kept, and owner labels.
 */
export function trainingJobManifest(o: KubernetesOptions, paths: PodPaths, t: AttemptTarget): V1Job {
  const name = trainingJobName(t.tenant, t.jobId, t.attempt);
  const labels = {
    "app.kubernetes.io/name": "lathe",
    "app.kubernetes.io/part-of": "lathe",
    "app.kubernetes.io/component": "training",
    [labelKeys.managedBy]: managedBy,
    [labelKeys.tenant]: labelValue(t.tenant),
    [labelKeys.job]: labelValue(t.jobId),
    [labelKeys.attempt]: String(t.attempt),
  };
  const own = new Set(["LATHE_DATA_DIR", "LATHE_TRAINER_GPU_DEVICE", ...(o.artifactsClaim === null ? [] : ["LATHE_ARTIFACTS_DIR"])]);
  const env: V1EnvVar[] = [
    ...(o.env.filter((e) => !own.has(e.name)) as V1EnvVar[]),
    { name: "LATHE_DATA_DIR", value: paths.dataDir },
    { name: "LATHE_TRAINER_GPU_DEVICE", value: paths.gpuDevice ?? "cuda" },
  ];
  if (o.artifactsClaim !== null) env.push({ name: "LATHE_ARTIFACTS_DIR", value: paths.artifactsDir });
  const limits: Record<string, string> = { ...o.resources.limits };
  if (t.gpuCount > 0) limits[o.gpuResource] = String(t.gpuCount);
  const resources = { ...(o.resources.requests && Object.keys(o.resources.requests).length > 0 ? { requests: { ...o.resources.requests } } : {}), ...(Object.keys(limits).length > 0 ? { limits } : {}) };
  const affinity = Object.keys(o.affinity).length > 0 ? o.affinity : undefined;
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name,
      namespace: o.namespace,
      labels,
      annotations: { "lathe.dev/fine-tuning-job-name": `${t.tenant}/fineTuningJobs/${t.jobId}`, "lathe.dev/hardware": t.hardware },
    },
    spec: {
      backoffLimit: 0,
      activeDeadlineSeconds: o.activeDeadlineSeconds,
      ttlSecondsAfterFinished: o.ttlSecondsAfterFinished,
      template: {
        metadata: { labels: { ...labels, [labelKeys.trainingJob]: name } },
        spec: {
          restartPolicy: "Never",
          // The pod talks to Postgres and the artifact store, never to the Kubernetes API.
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          ...(Object.keys(o.nodeSelector).length > 0 ? { nodeSelector: o.nodeSelector } : {}),
          ...(o.tolerations.length > 0 ? { tolerations: o.tolerations } : {}),
          ...(affinity ? { affinity: affinity as V1Affinity } : {}),
          ...(Object.keys(o.podSecurityContext).length > 0 ? { securityContext: o.podSecurityContext } : {}),
          ...(o.imagePullSecrets.length > 0 ? { imagePullSecrets: o.imagePullSecrets.map((s) => ({ name: s })) } : {}),
          containers: [
            {
              name: "train",
              image: o.image,
              imagePullPolicy: o.imagePullPolicy,
              args: [trainerEntry, "train-job", "--job", `${t.tenant}/${t.jobId}`, "--attempt", String(t.attempt), "--worker", name],
              ...(o.envFrom.length > 0 ? { envFrom: o.envFrom } : {}),
              env,
              ...(Object.keys(resources).length > 0 ? { resources } : {}),
              // The last log lines become the pod's termination message when the trainer fails.
              terminationMessagePolicy: "FallbackToLogsOnError",
              securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } },
              volumeMounts: [{ name: "work", mountPath: paths.dataDir }, ...(o.artifactsClaim === null ? [] : [{ name: "artifacts", mountPath: paths.artifactsDir }])],
            },
          ],
          volumes: [{ name: "work", emptyDir: {} }, ...(o.artifactsClaim === null ? [] : [{ name: "artifacts", persistentVolumeClaim: { claimName: o.artifactsClaim } }])],
        },
      },
    },
  } as V1Job;
}
