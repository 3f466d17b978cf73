import { ConfigError, loadConfig } from "@lathe/kit";
import { z } from "zod";

/* The Kubernetes runner's variables (LATHE_TRAINER_K8S_*) and the options they make. */

/** A Kubernetes quantity such as `500m`, `4`, `16Gi`. */
const quantity = z.string().regex(/^\d+(\.\d+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/, "must be a Kubernetes quantity such as 500m, 4 or 16Gi");
const resourceList = z.record(z.string().min(1), quantity);

const toleration = z.strictObject({
  key: z.string().optional(),
  operator: z.enum(["Exists", "Equal"]).optional(),
  value: z.string().optional(),
  effect: z.enum(["NoSchedule", "PreferNoSchedule", "NoExecute"]).optional(),
  tolerationSeconds: z.number().int().optional(),
});
const envName = z.string().regex(/^[-._a-zA-Z][-._a-zA-Z0-9]*$/, "must be an environment variable name");
const envVar = z.strictObject({ name: envName, value: z.string().optional(), valueFrom: z.record(z.string(), z.unknown()).optional() });
const keyRef = z.strictObject({ name: z.string().min(1), optional: z.boolean().optional() });
const envFrom = z.strictObject({ prefix: z.string().optional(), configMapRef: keyRef.optional(), secretRef: keyRef.optional() });
const affinity = z.strictObject({ nodeAffinity: z.record(z.string(), z.unknown()).optional(), podAffinity: z.record(z.string(), z.unknown()).optional(), podAntiAffinity: z.record(z.string(), z.unknown()).optional() });
const resources = z.strictObject({ requests: resourceList.optional(), limits: resourceList.optional() });

/** A variable holding JSON of `shape`; an error names the variable's part that is wrong. */
function jsonVariable<S extends z.ZodType>(shape: S) {
  return z
    .string()
    .superRefine((raw, ctx) => {
      let value: unknown;
      try {
        value = JSON.parse(raw);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: `is not JSON: ${(err as Error).message}` });
        return;
      }
      const parsed = shape.safeParse(value);
      if (!parsed.success) {
        for (const i of parsed.error.issues) ctx.addIssue({ code: "custom", message: `${i.path.length === 0 ? "" : `${formatPath(i.path)}: `}${i.message}` });
      }
    })
    .optional();
}

const formatPath = (path: readonly PropertyKey[]) => path.map((p, i) => (typeof p === "number" ? `[${p}]` : `${i === 0 ? "" : "."}${String(p)}`)).join("");

/**
 * The variables of the Kubernetes runner (see docs/training.md). Each is optional in the config and
 * takes its stated default in `kubernetesOptionsOf`, so options given in code may leave them out.
 */
export const kubernetesVariables = {
  /** The namespace training Jobs are made in (the trainer's own: its Role grants nothing elsewhere). Unset: no Kubernetes runner, GPU jobs are refused. */
  LATHE_TRAINER_K8S_NAMESPACE: z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, "must be a Kubernetes namespace name").max(63).optional(),
  /** The trainer image the Jobs run (its entry point node, as the chart's images). Required with LATHE_TRAINER_K8S_NAMESPACE. */
  LATHE_TRAINER_K8S_IMAGE: z.string().min(1).optional(),
  /** The image pull policy of the Jobs' container. Default IfNotPresent. */
  LATHE_TRAINER_K8S_IMAGE_PULL_POLICY: z.enum(["Always", "IfNotPresent", "Never"]).optional(),
  /** JSON list of Secret names the Jobs pull the image with. Default []. */
  LATHE_TRAINER_K8S_IMAGE_PULL_SECRETS: jsonVariable(z.array(z.string().min(1))),
  /** Which jobs go to Kubernetes: `gpu` (jobs asking for CUDA; CPU jobs stay on local workers) or `all` (local workers take none). Default gpu. */
  LATHE_TRAINER_K8S_ROUTE: z.enum(["gpu", "all"]).optional(),
  /** JSON object: the node pool's nodeSelector. Default {}. */
  LATHE_TRAINER_K8S_NODE_SELECTOR: jsonVariable(z.record(z.string().min(1), z.string())),
  /** JSON list: the node pool's tolerations, as a pod spec has them. Default []. */
  LATHE_TRAINER_K8S_TOLERATIONS: jsonVariable(z.array(toleration)),
  /** JSON object: the pods' affinity (nodeAffinity, podAffinity, podAntiAffinity), as a pod spec has it. Default {}. */
  LATHE_TRAINER_K8S_AFFINITY: jsonVariable(affinity),
  /** The extended resource a job's compute.gpu_count is asked as. Default nvidia.com/gpu. */
  LATHE_TRAINER_K8S_GPU_RESOURCE: z.string().regex(/^([a-z0-9.-]+\/)?[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$/, "must be a resource name such as nvidia.com/gpu").optional(),
  /** JSON {requests, limits} of CPU, memory and the like for the training container (the GPU limit is added per job). Default {}. */
  LATHE_TRAINER_K8S_RESOURCES: jsonVariable(resources),
  /** JSON list of the container's env entries (name with value or valueFrom), e.g. LATHE_PG_URL from a Secret. Default []. */
  LATHE_TRAINER_K8S_ENV: jsonVariable(z.array(envVar)),
  /** JSON list of the container's envFrom sources (configMapRef, secretRef): the trainer's own environment. Default []. */
  LATHE_TRAINER_K8S_ENV_FROM: jsonVariable(z.array(envFrom)),
  /** The ReadWriteMany claim of the artifact store, mounted at the trainer's LATHE_ARTIFACTS_DIR. Unset: the Jobs reach artifacts through their env. */
  LATHE_TRAINER_K8S_ARTIFACTS_CLAIM: z.string().regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, "must be a PersistentVolumeClaim name").max(253).optional(),
  /** JSON object: the pods' securityContext (runAsUser, fsGroup, …). Default {}. */
  LATHE_TRAINER_K8S_POD_SECURITY_CONTEXT: jsonVariable(z.record(z.string(), z.unknown())),
  /** How long one attempt may run before Kubernetes stops it (the job then fails with DEADLINE_EXCEEDED), in seconds. Default 604800 (7 days). */
  LATHE_TRAINER_K8S_ACTIVE_DEADLINE_SECONDS: z.coerce.number().int().min(60).max(31_536_000).optional(),
  /** How long a finished Job and its pod stay for inspection before Kubernetes removes them, in seconds. Default 3600. */
  LATHE_TRAINER_K8S_TTL_SECONDS_AFTER_FINISHED: z.coerce.number().int().min(0).max(31_536_000).optional(),
  /** Kubernetes Jobs this trainer process keeps at once (pending or running); more jobs wait queued. Default 8. */
  LATHE_TRAINER_K8S_MAX_JOBS: z.coerce.number().int().min(1).max(10_000).optional(),
  /** Attempts of one job (the first and those after lost pods) before it fails with PODS_LOST. Default 5. */
  LATHE_TRAINER_K8S_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(1000).optional(),
  /** A kubeconfig file to reach the API server with (its current context). Unset: the in-cluster service account. */
  LATHE_TRAINER_K8S_KUBECONFIG: z.string().min(1).optional(),
};

/** A JSON variable, checked by its schema when the config was loaded. */
const json = (raw: string | undefined, fallback: string): unknown => JSON.parse(raw ?? fallback);

type Variables = { [K in keyof typeof kubernetesVariables]: z.infer<(typeof kubernetesVariables)[K]> };

export type Toleration = z.infer<typeof toleration>;
export type EnvVar = z.infer<typeof envVar>;
export type EnvFromSource = z.infer<typeof envFrom>;

/** The Kubernetes runner's settings, parsed. */
export interface KubernetesOptions {
  namespace: string;
  image: string;
  imagePullPolicy: "Always" | "IfNotPresent" | "Never";
  imagePullSecrets: string[];
  route: "gpu" | "all";
  nodeSelector: Record<string, string>;
  tolerations: Toleration[];
  affinity: z.infer<typeof affinity>;
  gpuResource: string;
  resources: z.infer<typeof resources>;
  env: EnvVar[];
  envFrom: EnvFromSource[];
  artifactsClaim: string | null;
  podSecurityContext: Record<string, unknown>;
  activeDeadlineSeconds: number;
  ttlSecondsAfterFinished: number;
  maxJobs: number;
  maxAttempts: number;
  kubeconfig: string | null;
}

/**
 * The runner's options from the trainer's loaded options, or null when LATHE_TRAINER_K8S_NAMESPACE
 * is unset (no Kubernetes runner). ConfigError naming the variable when one is missing.
 */
export function kubernetesOptionsOf(given: Partial<Variables>): KubernetesOptions | null {
  if (given.LATHE_TRAINER_K8S_NAMESPACE === undefined) return null;
  // Options given in code (not read from the environment) are checked here as the environment is.
  const v = loadConfig(z.object(kubernetesVariables), Object.fromEntries(Object.keys(kubernetesVariables).map((k) => [k, (given as Record<string, unknown>)[k] === undefined ? undefined : String((given as Record<string, unknown>)[k])]))) as Partial<Variables>;
  if (v.LATHE_TRAINER_K8S_NAMESPACE === undefined) return null;
  if (v.LATHE_TRAINER_K8S_IMAGE === undefined) throw new ConfigError(["LATHE_TRAINER_K8S_IMAGE: is required with LATHE_TRAINER_K8S_NAMESPACE (the trainer image the training Jobs run)"]);
  return {
    namespace: v.LATHE_TRAINER_K8S_NAMESPACE,
    image: v.LATHE_TRAINER_K8S_IMAGE,
    imagePullPolicy: v.LATHE_TRAINER_K8S_IMAGE_PULL_POLICY ?? "IfNotPresent",
    imagePullSecrets: json(v.LATHE_TRAINER_K8S_IMAGE_PULL_SECRETS, "[]") as string[],
    route: v.LATHE_TRAINER_K8S_ROUTE ?? "gpu",
    nodeSelector: json(v.LATHE_TRAINER_K8S_NODE_SELECTOR, "{}") as Record<string, string>,
    tolerations: json(v.LATHE_TRAINER_K8S_TOLERATIONS, "[]") as Toleration[],
    affinity: json(v.LATHE_TRAINER_K8S_AFFINITY, "{}") as KubernetesOptions["affinity"],
    gpuResource: v.LATHE_TRAINER_K8S_GPU_RESOURCE ?? "nvidia.com/gpu",
    resources: json(v.LATHE_TRAINER_K8S_RESOURCES, "{}") as KubernetesOptions["resources"],
    env: json(v.LATHE_TRAINER_K8S_ENV, "[]") as EnvVar[],
    envFrom: json(v.LATHE_TRAINER_K8S_ENV_FROM, "[]") as EnvFromSource[],
    artifactsClaim: v.LATHE_TRAINER_K8S_ARTIFACTS_CLAIM ?? null,
    podSecurityContext: json(v.LATHE_TRAINER_K8S_POD_SECURITY_CONTEXT, "{}") as Record<string, unknown>,
    activeDeadlineSeconds: v.LATHE_TRAINER_K8S_ACTIVE_DEADLINE_SECONDS ?? 604_800,
    ttlSecondsAfterFinished: v.LATHE_TRAINER_K8S_TTL_SECONDS_AFTER_FINISHED ?? 3600,
    maxJobs: v.LATHE_TRAINER_K8S_MAX_JOBS ?? 8,
    maxAttempts: v.LATHE_TRAINER_K8S_MAX_ATTEMPTS ?? 5,
    kubeconfig: v.LATHE_TRAINER_K8S_KUBECONFIG ?? null,
  };
}
