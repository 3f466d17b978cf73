// A stand-in for the Kubernetes API server, for the paths the trainer's Kubernetes runner uses:
// POST, GET, DELETE /apis/batch/v1/namespaces/{ns}/jobs[/{name}] (list with an equality
// labelSelector) and GET /api/v1/namespaces/{ns}/pods?labelSelector=…. Jobs and their pods live in
// memory; a created Job gets one Pending pod at once (the job controller's work), labelled as the
// controller labels it (job-name, batch.kubernetes.io/job-name, controller-uid) plus the template's
// labels. The test then plays the kubelet and the node: `setPod` makes the pod Running,
// Succeeded, Failed with an exit code, OOMKilled, stuck on ErrImagePull, Evicted, on a node that
// is not ready, or deleted (as the pod garbage collector does after node loss), and the Job's
// status follows as the job controller would set it (backoffLimit 0). Errors are Status objects
// with Kubernetes' reasons (NotFound, AlreadyExists). Not served: watch, patch, auth, admission.
import { randomBytes, randomUUID } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Obj = Record<string, any>;

/** What the test makes of a Job's pod. */
export type PodState =
  | "running"
  | "succeeded"
  | { failed: number; message?: string }
  | "oom-killed"
  | "err-image-pull"
  | "evicted"
  | "node-not-ready"
  /** Removed, as the pod GC does to the pods of a lost node (DeletionByPodGC). */
  | "deleted";

export interface KubernetesApiRequest {
  method: string;
  /** Path and query, e.g. "/apis/batch/v1/namespaces/lathe/jobs". */
  path: string;
  body: unknown;
}

export interface KubernetesApiDouble {
  /** The server's URL, e.g. "http://127.0.0.1:41234". */
  url: string;
  /** Every request received, in order. */
  requests: KubernetesApiRequest[];
  /** Every Job manifest POSTed, as received (before defaults), in order. */
  created: Obj[];
  /** The Jobs that exist now, with their status. */
  jobs(): Obj[];
  /** The pod of a Job, if it has one now. */
  pod(jobName: string): Obj | undefined;
  /** Sets the pod of a Job (and the Job's status) to a state; see PodState. */
  setPod(jobName: string, state: PodState): void;
  /** Called with each Job created (after its pod was made). */
  onJobCreated(listener: (job: Obj) => void): void;
  /** Writes a kubeconfig whose current context points at this server. */
  writeKubeconfig(path: string, namespace?: string): Promise<void>;
  close(): Promise<void>;
}

const now = () => new Date().toISOString();

function status(res: ServerResponse, code: number, reason: string, message: string, details: Obj = {}): void {
  res.writeHead(code, { "content-type": "application/json" });
  res.end(JSON.stringify({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, details, code }));
}

function send(res: ServerResponse, body: unknown): void {
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

/** Equality-based selectors only (`a=b,c=d`, `a==b`), which is what the runner sends. */
function matches(labels: Record<string, string> | undefined, selector: string | null): boolean {
  if (!selector) return true;
  return selector.split(",").every((term) => {
    const [k, v] = term.split(/==?/);
    return (labels ?? {})[k!.trim()] === v?.trim();
  });
}

/** Starts the double on a free loopback port. */
export async function startKubernetesApi(): Promise<KubernetesApiDouble> {
  const jobs = new Map<string, Obj>(); // `${ns}/${name}`
  const pods = new Map<string, Obj>(); // `${ns}/${jobName}` → its pod
  const requests: KubernetesApiRequest[] = [];
  const created: Obj[] = [];
  const listeners: ((job: Obj) => void)[] = [];
  let version = 1;
  const rv = () => String(++version);

  const makePod = (job: Obj): Obj => {
    const uid = job.metadata.uid as string;
    const name = `${job.metadata.name}-${randomBytes(3).toString("hex").slice(0, 5)}`;
    const template = job.spec.template;
    return {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name,
        namespace: job.metadata.namespace,
        uid: randomUUID(),
        resourceVersion: rv(),
        creationTimestamp: now(),
        labels: { ...(template.metadata?.labels ?? {}), "job-name": job.metadata.name, "batch.kubernetes.io/job-name": job.metadata.name, "controller-uid": uid, "batch.kubernetes.io/controller-uid": uid },
        ownerReferences: [{ apiVersion: "batch/v1", kind: "Job", name: job.metadata.name, uid, controller: true, blockOwnerDeletion: true }],
      },
      spec: { ...template.spec, nodeName: "gpu-node-1" },
      status: { phase: "Pending", conditions: [{ type: "PodScheduled", status: "True", lastTransitionTime: now() }], containerStatuses: [] },
    };
  };

  const containerStatus = (pod: Obj, state: Obj, extra: Obj = {}): Obj[] => [{ name: pod.spec.containers[0].name, image: pod.spec.containers[0].image, imageID: "", ready: state["running"] !== undefined, restartCount: 0, state, ...extra }];

  const finish = (job: Obj, type: "Complete" | "Failed", reason: string, message: string) => {
    const t = now();
    job.status = {
      ...job.status,
      active: 0,
      [type === "Complete" ? "succeeded" : "failed"]: 1,
      completionTime: type === "Complete" ? t : undefined,
      conditions: [...(type === "Complete" ? [{ type: "SuccessCriteriaMet", status: "True", lastProbeTime: t, lastTransitionTime: t }] : [{ type: "FailureTarget", status: "True", reason, message, lastProbeTime: t, lastTransitionTime: t }]), { type, status: "True", reason, message, lastProbeTime: t, lastTransitionTime: t }],
    };
    job.metadata.resourceVersion = rv();
  };

  const setPod = (jobName: string, state: PodState): void => {
    const [key, job] = [...jobs.entries()].find(([, j]) => j.metadata.name === jobName) ?? [];
    if (!key || !job) throw new Error(`no Job ${jobName}`);
    const pod = pods.get(key);
    if (!pod) throw new Error(`Job ${jobName} has no pod`);
    const t = now();
    const ready = (s: "True" | "False", reason?: string) => [
      { type: "PodScheduled", status: "True", lastTransitionTime: t },
      { type: "Initialized", status: "True", lastTransitionTime: t },
      { type: "ContainersReady", status: s, lastTransitionTime: t },
      { type: "Ready", status: s, lastTransitionTime: t, ...(reason ? { reason } : {}) },
    ];
    const terminated = (exitCode: number, reason: string, message?: string) => ({ terminated: { exitCode, reason, startedAt: t, finishedAt: t, ...(message ? { message } : {}) } });
    pod.metadata.resourceVersion = rv();
    if (state === "running") {
      pod.status = { phase: "Running", podIP: "10.0.0.7", startTime: t, conditions: ready("True"), containerStatuses: containerStatus(pod, { running: { startedAt: t } }) };
    } else if (state === "succeeded") {
      pod.status = { phase: "Succeeded", startTime: t, conditions: ready("False", "PodCompleted"), containerStatuses: containerStatus(pod, terminated(0, "Completed")) };
      finish(job, "Complete", "CompletionsReached", "Reached expected number of succeeded pods");
    } else if (state === "oom-killed") {
      pod.status = { phase: "Failed", startTime: t, conditions: ready("False", "PodFailed"), containerStatuses: containerStatus(pod, terminated(137, "OOMKilled")) };
      finish(job, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit");
    } else if (state === "err-image-pull") {
      const image = pod.spec.containers[0].image as string;
      pod.status = {
        phase: "Pending",
        startTime: t,
        conditions: ready("False", "ContainersNotReady"),
        containerStatuses: containerStatus(pod, { waiting: { reason: "ErrImagePull", message: `failed to pull and unpack image "${image}": failed to resolve reference "${image}": not found` } }),
      };
    } else if (state === "evicted") {
      pod.status = {
        phase: "Failed",
        reason: "Evicted",
        message: "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki.",
        startTime: t,
        conditions: [...ready("False", "PodFailed"), { type: "DisruptionTarget", status: "True", reason: "TerminationByKubelet", message: "The node was low on resource: memory.", lastTransitionTime: t }],
        containerStatuses: containerStatus(pod, terminated(137, "ContainerStatusUnknown", "The container could not be located when the pod was terminated")),
      };
      finish(job, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit");
    } else if (state === "node-not-ready") {
      pod.status = { ...pod.status, conditions: ready("False") };
    } else if (state === "deleted") {
      pods.delete(key);
      // The job controller counts a pod removed before it finished as failed (backoffLimit 0).
      finish(job, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit");
    } else {
      pod.status = { phase: "Failed", startTime: t, conditions: ready("False", "PodFailed"), containerStatuses: containerStatus(pod, terminated(state.failed, "Error", state.message)) };
      finish(job, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit");
    }
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    let body: unknown = null;
    if (text !== "") {
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    }
    const url = new URL(req.url ?? "/", "http://localhost");
    requests.push({ method: req.method ?? "", path: `${url.pathname}${url.search}`, body });
    const jobPath = /^\/apis\/batch\/v1\/namespaces\/([^/]+)\/jobs(?:\/([^/]+))?$/.exec(url.pathname);
    const podPath = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(url.pathname);
    const selector = url.searchParams.get("labelSelector");
    if (url.searchParams.get("watch") === "true") return status(res, 405, "MethodNotAllowed", "this double serves no watch");
    if (jobPath) {
      const [, ns, name] = jobPath;
      const key = `${ns}/${name}`;
      if (req.method === "POST" && name === undefined) {
        const job = body as Obj;
        if (typeof job !== "object" || job === null || job["kind"] !== "Job") return status(res, 400, "BadRequest", "the body is not a Job");
        created.push(structuredClone(job));
        const jobName = job["metadata"]?.name as string;
        if (jobs.has(`${ns}/${jobName}`)) return status(res, 409, "AlreadyExists", `jobs.batch "${jobName}" already exists`, { name: jobName, group: "batch", kind: "jobs" });
        const stored: Obj = structuredClone(job);
        stored["metadata"] = { ...stored["metadata"], namespace: ns, uid: randomUUID(), resourceVersion: rv(), creationTimestamp: now(), generation: 1 };
        stored["status"] = { active: 1, startTime: now(), ready: 0, terminating: 0 };
        jobs.set(`${ns}/${jobName}`, stored);
        pods.set(`${ns}/${jobName}`, makePod(stored));
        res.writeHead(201, { "content-type": "application/json" });
        res.end(JSON.stringify(stored));
        for (const l of listeners) l(structuredClone(stored));
        return;
      }
      if (req.method === "GET" && name === undefined) {
        const items = [...jobs.entries()].filter(([k, j]) => k.startsWith(`${ns}/`) && matches(j["metadata"].labels, selector)).map(([, j]) => j);
        return send(res, { kind: "JobList", apiVersion: "batch/v1", metadata: { resourceVersion: String(version) }, items });
      }
      const job = jobs.get(key);
      if (!job) return status(res, 404, "NotFound", `jobs.batch "${name}" not found`, { name, group: "batch", kind: "jobs" });
      if (req.method === "GET") return send(res, job);
      if (req.method === "DELETE") {
        jobs.delete(key);
        // propagationPolicy Background: the garbage collector removes the pods afterwards.
        pods.delete(key);
        return send(res, { kind: "Status", apiVersion: "v1", metadata: {}, status: "Success", details: { name, group: "batch", kind: "jobs", uid: job["metadata"].uid } });
      }
      return status(res, 405, "MethodNotAllowed", `${req.method} is not served by this double`);
    }
    if (podPath && req.method === "GET") {
      const [, ns] = podPath;
      const items = [...pods.entries()].filter(([k, p]) => k.startsWith(`${ns}/`) && matches(p["metadata"].labels, selector)).map(([, p]) => p);
      return send(res, { kind: "PodList", apiVersion: "v1", metadata: { resourceVersion: String(version) }, items });
    }
    return status(res, 404, "NotFound", `the server could not find the requested resource (${req.method} ${url.pathname})`);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => status(res, 500, "InternalError", String(err)));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    requests,
    created,
    jobs: () => [...jobs.values()].map((j) => structuredClone(j)),
    pod: (jobName) => {
      const entry = [...jobs.entries()].find(([, j]) => j["metadata"].name === jobName);
      const p = entry ? pods.get(entry[0]) : undefined;
      return p ? structuredClone(p) : undefined;
    },
    setPod,
    onJobCreated: (l) => listeners.push(l),
    async writeKubeconfig(path, namespace = "default") {
      const config = {
        apiVersion: "v1",
        kind: "Config",
        // client-node refuses plain HTTP unless TLS verification is off.
        clusters: [{ name: "double", cluster: { server: url, "insecure-skip-tls-verify": true } }],
        users: [{ name: "double", user: { token: "test-token" } }],
        contexts: [{ name: "double", context: { cluster: "double", user: "double", namespace } }],
        "current-context": "double",
      };
      await writeFile(path, JSON.stringify(config));
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
