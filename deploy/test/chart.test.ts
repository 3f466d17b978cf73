import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Chart, ValuesError, type RenderedChart } from "./helm-chart.js";
import { TemplateFailure } from "./go-template.js";
import { modelClass, repoRoot } from "./modules.js";
import { kubernetesOptionsOf } from "../../services/trainer/src/runner/kubernetes-config.js";
import { trainingJobManifest } from "../../services/trainer/src/runner/job-manifest.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

// helm/lathe rendered as `helm template` would (./helm-chart.ts), with each values file, every
// object checked against the Kubernetes OpenAPI schemas and against what the platform needs.

const chartDir = join(repoRoot, "helm/lathe");
const chart = new Chart(chartDir);
const valuesFiles: Record<string, string[]> = {
  defaults: [],
  dev: [join(chartDir, "values-dev.yaml")],
  production: [join(chartDir, "values-production.yaml")],
};
const renders = new Map<string, RenderedChart>(Object.entries(valuesFiles).map(([k, files]) => [k, chart.render({ valueFiles: files })]));

const ofKind = (r: RenderedChart, kind: string) => r.objects.filter((o: any) => o.kind === kind) as any[];
const named = (r: RenderedChart, kind: string, name: string) => {
  const o = ofKind(r, kind).find((x) => x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name} in ${r.objects.map((x: any) => `${x.kind}/${x.metadata.name}`).join(", ")}`);
  return o;
};
const podSpecs = (r: RenderedChart) =>
  [...ofKind(r, "Deployment"), ...ofKind(r, "StatefulSet"), ...ofKind(r, "Job")].map((o) => ({
    owner: `${o.kind}/${o.metadata.name}`,
    // A StatefulSet's claim templates are volumes of its pods too.
    spec: { ...o.spec.template.spec, volumes: [...(o.spec.template.spec.volumes ?? []), ...(o.spec.volumeClaimTemplates ?? []).map((t: any) => ({ name: t.metadata.name }))] },
    labels: o.spec.template.metadata.labels,
  }));
const latheServices = ["dataset", "synthgen", "trainer", "evaluator", "registry", "gateway"];

describe.each([...renders.keys()])("the chart with %s values", (which) => {
  const r = renders.get(which)!;

  it("renders objects that each pass the Kubernetes OpenAPI schema of their kind", async () => {
    expect(r.objects.length).toBeGreaterThan(10);
    for (const obj of r.objects as any[]) {
      const Model = await modelClass(obj.apiVersion, obj.kind);
      try {
        new Model(obj).validate();
      } catch (err) {
        throw new Error(`${obj.kind}/${obj.metadata?.name}: ${(err as Error).message}`);
      }
    }
  });

  it("would notice an object the API server refuses (the validator is not a no-op)", async () => {
    const d = structuredClone(named(r, "Deployment", "lathe-registry"));
    d.spec.template.spec.containers[0].ports[0].containerPort = "grpc";
    const Deployment = await modelClass("apps/v1", "Deployment");
    expect(() => new Deployment(d).validate()).toThrow(/containerPort/);
  });

  it("passes lint checks: unique DNS names, standard labels, selectors that select, references that resolve", () => {
    const seen = new Set<string>();
    for (const o of r.objects as any[]) {
      const key = `${o.kind}/${o.metadata.name}`;
      expect(seen.has(key), `${key} twice`).toBe(false);
      seen.add(key);
      expect(o.metadata.name).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
      expect(o.metadata.name.length).toBeLessThanOrEqual(63);
      expect(o.metadata.labels?.["app.kubernetes.io/instance"], key).toBe("lathe");
      expect(o.metadata.labels?.["app.kubernetes.io/managed-by"], key).toBe("Helm");
      expect(o.metadata.namespace, `${key}: the release namespace is the install's`).toBeUndefined();
    }
    const pods = podSpecs(r);
    const selects = (selector: Record<string, string>) => pods.filter((p) => Object.entries(selector).every(([k, v]) => p.labels[k] === v));
    for (const s of ofKind(r, "Service")) expect(selects(s.spec.selector).length, `Service ${s.metadata.name} selects nothing`).toBeGreaterThan(0);
    for (const p of ofKind(r, "PodDisruptionBudget")) expect(selects(p.spec.selector.matchLabels).length, `PDB ${p.metadata.name}`).toBe(1);
    for (const d of [...ofKind(r, "Deployment"), ...ofKind(r, "StatefulSet")]) {
      expect(Object.entries(d.spec.selector.matchLabels).every(([k, v]) => d.spec.template.metadata.labels[k] === v), d.metadata.name).toBe(true);
    }
    // Every ConfigMap, PVC and ServiceAccount a pod names is in the chart; Secrets are either in
    // the chart or ones the values say the operator made.
    const configMaps = new Set(ofKind(r, "ConfigMap").map((c) => c.metadata.name));
    const claims = new Set(ofKind(r, "PersistentVolumeClaim").map((c) => c.metadata.name));
    const accounts = new Set(ofKind(r, "ServiceAccount").map((c) => c.metadata.name));
    const v = r.values as any;
    const secrets = new Set([
      ...ofKind(r, "Secret").map((c) => c.metadata.name),
      ...(v.postgres.bundled.enabled ? [] : [v.postgres.existingSecret]),
      ...(v.apiKeys.value ? [] : [v.apiKeys.existingSecret]),
      ...(v.pageTokenSecret.existingSecret ? [v.pageTokenSecret.existingSecret] : []),
      ...v.secrets.files.map((f: any) => f.secretName),
      ...Object.values(v.secrets.env).map((e: any) => e.secretName),
    ]);
    for (const { owner, spec } of pods) {
      if (spec.serviceAccountName) expect(accounts.has(spec.serviceAccountName), `${owner}: ServiceAccount ${spec.serviceAccountName}`).toBe(true);
      for (const vol of spec.volumes ?? []) {
        if (vol.configMap) expect(configMaps.has(vol.configMap.name), `${owner}: ConfigMap ${vol.configMap.name}`).toBe(true);
        if (vol.persistentVolumeClaim) expect(claims.has(vol.persistentVolumeClaim.claimName) || v.artifacts.existingClaim, owner).toBeTruthy();
        for (const src of vol.projected?.sources ?? []) if (src.secret) expect(secrets.has(src.secret.name), `${owner}: Secret ${src.secret.name}`).toBe(true);
      }
      for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
        for (const e of c.envFrom ?? []) if (e.configMapRef) expect(configMaps.has(e.configMapRef.name), `${owner}: ConfigMap ${e.configMapRef.name}`).toBe(true);
        for (const e of c.env ?? []) if (e.valueFrom?.secretKeyRef) expect(secrets.has(e.valueFrom.secretKeyRef.name), `${owner}: Secret ${e.valueFrom.secretKeyRef.name}`).toBe(true);
        for (const m of c.volumeMounts ?? []) expect((spec.volumes ?? []).some((x: any) => x.name === m.name), `${owner}: volume ${m.name}`).toBe(true);
      }
    }
  });

  it("runs every Lathe container as non-root on a read-only root filesystem, with resources and probes", () => {
    const deployments = ofKind(r, "Deployment");
    expect(deployments.map((d) => d.metadata.labels["app.kubernetes.io/component"]).sort()).toEqual([...latheServices].sort());
    for (const { owner, spec } of podSpecs(r).filter((p) => p.labels["app.kubernetes.io/component"] !== "postgres" && p.labels["app.kubernetes.io/component"] !== "nats")) {
      expect(spec.securityContext.runAsNonRoot, owner).toBe(true);
      expect(spec.securityContext.runAsUser, owner).toBeGreaterThan(0);
      expect(spec.securityContext.seccompProfile?.type, owner).toBe("RuntimeDefault");
      for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
        expect(c.securityContext.readOnlyRootFilesystem, `${owner} ${c.name}`).toBe(true);
        expect(c.securityContext.allowPrivilegeEscalation, `${owner} ${c.name}`).toBe(false);
        expect(c.securityContext.capabilities.drop, `${owner} ${c.name}`).toEqual(["ALL"]);
        expect(c.resources?.requests?.cpu, `${owner} ${c.name} cpu request`).toBeDefined();
        expect(c.resources?.requests?.memory, `${owner} ${c.name} memory request`).toBeDefined();
        expect(c.resources?.limits?.memory, `${owner} ${c.name} memory limit`).toBeDefined();
        expect(c.image, `${owner} ${c.name}`).not.toMatch(/:latest$/);
      }
    }
    for (const d of deployments) {
      const name = d.metadata.labels["app.kubernetes.io/component"];
      const [c] = d.spec.template.spec.containers;
      expect(c.livenessProbe.grpc.port, name).toBe(50051);
      expect(c.startupProbe.grpc.port, name).toBe(50051);
      if (name === "gateway") expect(c.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "http" });
      else expect(c.readinessProbe.grpc.service, name).toBe(`lathe.${name}.v1.${name === "synthgen" ? "SynthGen" : name[0]!.toUpperCase() + name.slice(1)}Service`);
      // The data folder and /tmp are the writable places besides the artifact volume.
      const mounts = c.volumeMounts.map((m: any) => m.mountPath);
      expect(mounts).toEqual(expect.arrayContaining(["/var/lib/lathe", "/tmp", "/var/lib/lathe/artifacts"]));
      // Only the trainer gets a Kubernetes API token.
      expect(d.spec.template.spec.automountServiceAccountToken, name).toBe(name === "trainer" ? undefined : false);
      const env = Object.fromEntries(c.env.map((e: any) => [e.name, e]));
      expect(env.LATHE_PG_URL.valueFrom.secretKeyRef).toBeDefined();
      expect(env.LATHE_API_KEYS.valueFrom.secretKeyRef).toBeDefined();
    }
  });

  it("lands the trainer's training Jobs on the GPU node pool, asking for the job's GPUs", async () => {
    const cm = named(r, "ConfigMap", "lathe-trainer-k8s").data as Record<string, string>;
    const v = r.values as any;
    if (!v.trainer.gpuNodePool.enabled) {
      expect(cm.LATHE_TRAINER_K8S_NAMESPACE).toBeUndefined();
      return;
    }
    // The trainer reads this ConfigMap as its environment: build the Job it would make.
    const options = kubernetesOptionsOf({ ...cm, LATHE_TRAINER_K8S_NAMESPACE: "lathe" } as any)!;
    const job = trainingJobManifest(options, { dataDir: "/var/lib/lathe", artifactsDir: "/var/lib/lathe/artifacts" }, { tenant: "acme", jobId: "ft-1", attempt: 1, gpuCount: 2, hardware: "nvidia-a100-80gb" }) as any;
    const Job = await modelClass("batch/v1", "Job");
    new Job(job).validate();
    const pod = job.spec.template.spec;
    expect(pod.nodeSelector).toEqual({ "lathe.dev/pool": "gpu" });
    expect(pod.tolerations).toContainEqual({ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" });
    expect(pod.containers[0].resources.limits["nvidia.com/gpu"]).toBe("2");
    expect(pod.containers[0].image).toMatch(/node-cuda/);
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    // It reads the same environment as the trainer and mounts the same artifact claim.
    expect(pod.containers[0].envFrom.map((e: any) => e.configMapRef.name)).toEqual(["lathe-env", "lathe-trainer-k8s"]);
    expect(pod.volumes).toContainEqual({ name: "artifacts", persistentVolumeClaim: { claimName: "lathe-artifacts" } });
    // The trainer may make and follow Jobs and pods in its namespace, and nothing else.
    const role = named(r, "Role", "lathe-trainer");
    expect(role.rules).toEqual([
      { apiGroups: ["batch"], resources: ["jobs"], verbs: ["create", "get", "list", "watch", "delete"] },
      { apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"] },
    ]);
    expect(named(r, "RoleBinding", "lathe-trainer").subjects).toEqual([{ kind: "ServiceAccount", name: "lathe-trainer", namespace: "lathe" }]);
  });

  it("migrates every schema in a hook Job before the services roll", () => {
    const job = named(r, "Job", "lathe-migrate");
    const v = r.values as any;
    expect(job.metadata.annotations["helm.sh/hook"]).toBe(v.postgres.bundled.enabled ? "post-install,pre-upgrade" : "pre-install,pre-upgrade");
    const spec = job.spec.template.spec;
    const steps = [...(spec.initContainers ?? []), ...spec.containers];
    expect(steps.map((c: any) => c.args)).toEqual([...latheServices].sort().map((s) => [`services/${s}/dist/main.js`, "migrate"]));
    expect(spec.restartPolicy).toBe("Never");
    // The services then check (verify) or migrate (apply) on start, as the values say.
    expect(named(r, "ConfigMap", "lathe-env").data.LATHE_MIGRATIONS).toBe(v.migrations.onStart);
  });

  it("renders NOTES.txt that tells how to reach the gateway", () => {
    expect(r.notes).toContain("OpenAI-compatible API");
    expect(r.notes).toMatch(/port-forward svc\/lathe-gateway-http|https?:\/\/lathe\.example\.com\/v1/);
  });
});

describe("chart values", () => {
  it("production pins replicas with disruption budgets, autoscales the gateway and wires secrets, prices and traces", () => {
    const r = renders.get("production")!;
    const hpa = named(r, "HorizontalPodAutoscaler", "lathe-gateway");
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: "apps/v1", kind: "Deployment", name: "lathe-gateway" });
    expect(named(r, "Deployment", "lathe-gateway").spec.replicas).toBeUndefined();
    expect(ofKind(r, "PodDisruptionBudget").map((p) => p.metadata.name).sort()).toEqual(latheServices.map((s) => `lathe-${s}`).sort());
    const env = named(r, "ConfigMap", "lathe-env").data;
    expect(env.OTEL_EXPORTER_OTLP_ENDPOINT).toBe("http://otel-collector.observability:4318");
    expect(env.LATHE_SECRET_REFS).toBe("env:LATHE_SECRET_*,file:/var/run/secrets/lathe/*");
    expect(JSON.parse(env.LATHE_SYNTHGEN_PRICES)).toEqual({ "gpt-4o-mini": { input: 0.15, output: 0.6 } });
    expect(env.LATHE_EVALUATOR_GATEWAY_URL).toBe("http://lathe-gateway-http:80/v1");
    const synthgen = named(r, "Deployment", "lathe-synthgen").spec.template.spec;
    const c = synthgen.containers[0];
    expect(c.env).toContainEqual({ name: "LATHE_SECRET_OPENAI", valueFrom: { secretKeyRef: { name: "lathe-teacher-keys", key: "openai" } } });
    expect(c.volumeMounts).toContainEqual({ name: "lathe-secrets", mountPath: "/var/run/secrets/lathe", readOnly: true });
    expect(synthgen.volumes.find((x: any) => x.name === "lathe-secrets").projected.sources).toEqual([{ secret: { name: "lathe-teacher-keys" } }]);
    const trainer = named(r, "Deployment", "lathe-trainer").spec.template.spec.containers[0];
    expect(trainer.env).toContainEqual({ name: "LATHE_TRAINER_COST_TABLE", value: "/etc/lathe/cost-table/cost-table.json" });
    expect(JSON.parse(named(r, "ConfigMap", "lathe-cost-table").data["cost-table.json"])[0].hourlyPrice).toBe(3.67);
    expect(named(r, "Ingress", "lathe-gateway").spec.rules[0].http.paths[0].backend.service).toEqual({ name: "lathe-gateway-http", port: { name: "http" } });
  });

  it("dev installs Postgres and NATS with the chart and points the services at them", () => {
    const r = renders.get("dev")!;
    expect(named(r, "StatefulSet", "lathe-postgres").spec.template.spec.containers[0].image).toMatch(/^postgres:16/);
    expect(named(r, "ConfigMap", "lathe-env").data.LATHE_NATS_URL).toBe("nats://lathe-nats:4222");
    const url = Buffer.from(named(r, "Secret", "lathe-postgres").data.url, "base64").toString();
    expect(url).toBe("postgres://lathe:dev-only-change-me@lathe-postgres:5432/lathe");
    expect(Buffer.from(named(r, "Secret", "lathe-api-keys").data.keys, "base64").toString()).toBe("dev-key-change-me=dev");
    expect(named(r, "Deployment", "lathe-gateway").spec.replicas).toBe(1);
    expect(ofKind(r, "PodDisruptionBudget")).toEqual([]);
  });

  it("serves on GPUs when gateway.gpu is on: the CUDA image, the GPU pool and a GPU limit", () => {
    const r = chart.render({ overrides: { gateway: { gpu: { enabled: true, count: 1 } }, images: { nodeCuda: { digest: `sha256:${"a".repeat(64)}` } } } });
    const spec = named(r, "Deployment", "lathe-gateway").spec.template.spec;
    expect(spec.containers[0].image).toBe(`lathe/node-cuda@sha256:${"a".repeat(64)}`);
    expect(spec.containers[0].resources.limits).toEqual({ memory: "4Gi", "nvidia.com/gpu": "1" });
    expect(spec.nodeSelector).toEqual({ "lathe.dev/pool": "gpu" });
    expect(spec.tolerations).toContainEqual({ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" });
    // Other services stay off the GPU pool.
    expect(named(r, "Deployment", "lathe-registry").spec.template.spec.nodeSelector).toBeUndefined();
  });

  it.each([
    ["a misspelt key", { gatway: {} }, "additional properties (gatway)"],
    ["a replica count as text", { services: { gateway: { replicas: "two" } } }, "/services/gateway/replicas: must be integer"],
    ["an unknown route", { trainer: { gpuNodePool: { route: "some" } } }, "/trainer/gpuNodePool/route: must be equal to one of the allowed values"],
    ["a root filesystem made writable", { containerSecurityContext: { readOnlyRootFilesystem: false } }, "/containerSecurityContext/readOnlyRootFilesystem"],
    ["the latest tag", { images: { node: { tag: "latest" } } }, "/images/node/tag"],
    ["a container without a memory limit", { services: { registry: { resources: { limits: { memory: null } } } } }, "/services/registry/resources/limits: must have required property 'memory'"],
    ["a secret reference outside env: and file:/", { secrets: { refs: "http://x" } }, "/secrets/refs"],
  ])("refuses %s at install, naming the value", (_what, overrides, message) => {
    expect(() => chart.render({ overrides })).toThrow(ValuesError);
    expect(() => chart.render({ overrides })).toThrow(message);
  });

  it("fails with the chart's message when the bundled Postgres has no password, or verify cannot work", () => {
    expect(() => chart.render({ valueFiles: valuesFiles.dev, overrides: { postgres: { bundled: { password: "" } } } })).toThrow(TemplateFailure);
    expect(() => chart.render({ valueFiles: valuesFiles.dev, overrides: { migrations: { onStart: "verify" } } })).toThrow(/migrations.onStart=verify/);
  });
});
