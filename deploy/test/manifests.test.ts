import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Chart, toYaml } from "./helm-chart.js";
import { jsYaml, modelClass, repoRoot } from "./modules.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

// deploy/k8s/ holds the chart rendered with its default values, for clusters without Helm. They
// must never drift from the chart: this test renders it again and compares. After changing the
// chart, regenerate them with
//   LATHE_UPDATE_MANIFESTS=1 node_modules/.bin/vitest run deploy/test/manifests.test.ts

const header = (what: string) =>
  `# GENERATED from helm/lathe with its default values (release "lathe", namespace "lathe") by\n` +
  `# deploy/test/manifests.test.ts: do not edit; change the chart and regenerate (see deploy/k8s/README.md).\n# ${what}\n`;

function manifests(): Map<string, string> {
  const r = new Chart(join(repoRoot, "helm/lathe")).render();
  const isHook = (o: any) => o.metadata.annotations?.["helm.sh/hook"] !== undefined;
  const doc = (o: any) => {
    // Without Helm the hook is a plain Job, applied (and waited for) before the services.
    const copy = structuredClone(o);
    if (isHook(copy)) {
      for (const k of Object.keys(copy.metadata.annotations)) if (k.startsWith("helm.sh/")) delete copy.metadata.annotations[k];
      if (Object.keys(copy.metadata.annotations).length === 0) delete copy.metadata.annotations;
    }
    return toYaml(copy);
  };
  return new Map([
    ["35-migrate-job.yaml", header("Schema migrations: apply, then `kubectl -n lathe wait --for=condition=complete job/lathe-migrate`, before 40-lathe.yaml.") + r.objects.filter(isHook).map(doc).join("\n---\n") + "\n"],
    ["40-lathe.yaml", header("The Lathe services: ConfigMaps, RBAC, the artifact volume, Deployments, Services, PDBs.") + r.objects.filter((o) => !isHook(o)).map(doc).join("\n---\n") + "\n"],
  ]);
}

describe("deploy/k8s", () => {
  it("holds the chart's manifests as the chart renders them today", () => {
    for (const [file, text] of manifests()) {
      const path = join(repoRoot, "deploy/k8s", file);
      if (process.env.LATHE_UPDATE_MANIFESTS === "1") writeFileSync(path, text);
      expect(existsSync(path), `${path} is missing: regenerate it`).toBe(true);
      expect(readFileSync(path, "utf8"), `${file} differs from the chart: regenerate it (see this file's header)`).toBe(text);
    }
  });

  it("holds only objects that pass the Kubernetes OpenAPI schema of their kind", async () => {
    const dir = join(repoRoot, "deploy/k8s");
    for (const file of readdirSync(dir).filter((f) => f.endsWith(".yaml"))) {
      for (const obj of jsYaml.loadAll(readFileSync(join(dir, file), "utf8")) as any[]) {
        if (!obj) continue;
        const Model = await modelClass(obj.apiVersion, obj.kind);
        expect(() => new Model(obj).validate(), `${file}: ${obj.kind}/${obj.metadata.name}`).not.toThrow();
      }
    }
  });
});

describe("deploy/local/compose.yaml", () => {
  it("runs every service from the image as its user on a read-only root, after the migrations, exporting traces to the collector", () => {
    const compose = jsYaml.load(readFileSync(join(repoRoot, "deploy/local/compose.yaml"), "utf8")) as any;
    const names = ["registry", "dataset", "synthgen", "trainer", "evaluator", "gateway"];
    for (const s of names) {
      const svc = compose.services[s];
      expect(svc.command, s).toEqual([`services/${s}/dist/main.js`]);
      expect(svc.user, s).toBe("10001:10001");
      expect(svc.read_only, s).toBe(true);
      expect(svc.depends_on.migrate.condition, s).toBe("service_completed_successfully");
      expect(svc.environment.OTEL_EXPORTER_OTLP_ENDPOINT, s).toBe("http://otel-collector:4318");
      expect(svc.environment.LATHE_MIGRATIONS, s).toBe("verify");
    }
    expect(compose.services.gateway.environment.LATHE_GATEWAY_HTTP_PORT).toBe("8080");
    for (const s of names) expect(compose.services.migrate.command[0]).toContain(s);
    for (const [name, svc] of Object.entries<any>(compose.services)) expect(svc.image, name).not.toMatch(/:latest$|^[^:]+$/);
    const collector = jsYaml.load(readFileSync(join(repoRoot, "deploy/local/otel-collector.yaml"), "utf8")) as any;
    expect(collector.service.pipelines.traces.exporters).toEqual(["otlp/jaeger"]);
  });
});
