import { existsSync, realpathSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/*
 * deploy/ is not a workspace package, so it has no node_modules of its own: the packages these
 * tests use are found where the workspace already installs them, through the packages that
 * depend on them (pnpm links each package's dependencies beside it), the way Node would resolve
 * them from there. kubernetes-models is a devDependency of @lathe/trainer (it validates the
 * trainer's Job manifests); js-yaml comes with @kubernetes/client-node; ajv with
 * kubernetes-models' validator.
 */

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The folder of package `name` as Node finds it from folder `from` (a realpath). */
export function packageDir(from: string, name: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules", name);
    if (existsSync(join(candidate, "package.json"))) return realpathSync(candidate);
    if (dirname(dir) === dir) throw new Error(`package ${name} is not installed where ${from} could find it: run scripts/setup.sh`);
  }
}

const trainerDir = join(repoRoot, "services/trainer");
export const kubernetesModelsDir = packageDir(trainerDir, "kubernetes-models");

/* eslint-disable @typescript-eslint/no-explicit-any */

/** js-yaml 4 (CommonJS), as @kubernetes/client-node has it. */
export const jsYaml: {
  load(s: string): unknown;
  loadAll(s: string): unknown[];
  dump(v: unknown, o?: Record<string, unknown>): string;
} = createRequire(join(packageDir(trainerDir, "@kubernetes/client-node"), "package.json"))("js-yaml");

/** Ajv 8 (draft-07, as Helm validates values.schema.json), as kubernetes-models' validator has it. */
export const Ajv: new (opts?: Record<string, unknown>) => any = (() => {
  const validateDir = packageDir(kubernetesModelsDir, "@kubernetes-models/validate");
  const mod = createRequire(join(validateDir, "package.json"))("ajv");
  return mod.default ?? mod;
})();

/**
 * The kubernetes-models class of a manifest's apiVersion and kind (`apps/v1` `Deployment` →
 * kubernetes-models/apps/v1/Deployment): `new Class(obj).validate()` checks the object against
 * the Kubernetes OpenAPI schema of that version.
 */
export async function modelClass(apiVersion: string, kind: string): Promise<new (o: unknown) => { validate(): void }> {
  const path = join(kubernetesModelsDir, ...apiVersion.split("/"), `${kind}.js`);
  if (!existsSync(path)) throw new Error(`kubernetes-models has no ${apiVersion} ${kind}: not a Kubernetes ${kind} of that version`);
  const mod = (await import(pathToFileURL(path).href)) as Record<string, any>;
  return mod[kind] ?? mod.default;
}
