import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "./modules.js";

// hadolint's rules that matter here, and ours, as tests over docker/*.Dockerfile (no hadolint
// binary in Debian; these read the files as Docker does: continued lines joined, comments dropped).

interface Instruction {
  op: string;
  args: string;
  line: number;
}

function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (/^\s*(#|$)/.test(lines[i]!)) continue;
    const start = i;
    let full = lines[i]!;
    while (full.endsWith("\\") && i + 1 < lines.length) full = full.slice(0, -1) + " " + lines[++i]!.replace(/^\s*#.*$/, "");
    const m = /^\s*([A-Za-z]+)\s+([\s\S]*)$/.exec(full);
    if (m) out.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim(), line: start + 1 });
  }
  return out;
}

/** A base image reference pinned to a release (x.y.z) or a digest, never a floating tag. */
const pinnedImage = /^[a-z0-9./-]+(:[0-9]+\.[0-9]+\.[0-9]+[A-Za-z0-9._-]*)?(@sha256:[a-f0-9]{64})?$/;
const isPinned = (ref: string) => pinnedImage.test(ref) && (/@sha256:/.test(ref) || /:[0-9]+\.[0-9]+\.[0-9]+/.test(ref));

const dockerfiles = ["docker/node.Dockerfile", "docker/node-cuda.Dockerfile"];

describe.each(dockerfiles)("%s", (file) => {
  const text = readFileSync(join(repoRoot, file), "utf8");
  const ins = instructions(text);
  const at = (i: Instruction) => `${file}:${i.line}`;
  const stages = ins.reduce<Instruction[][]>((acc, i) => (i.op === "FROM" ? [...acc, [i]] : (acc[acc.length - 1]?.push(i), acc)), []);
  const finalStage = stages[stages.length - 1]!;
  const globalArgs = new Map(ins.slice(0, ins.findIndex((i) => i.op === "FROM")).filter((i) => i.op === "ARG").map((i) => {
    const [name, ...rest] = i.args.split("=");
    return [name!, rest.join("=").replace(/^"|"$/g, "")];
  }));

  it("builds from pinned base images only (a release tag or a digest, never latest), through ARGs that can take a digest", () => {
    const stageNames = new Set<string>();
    for (const from of ins.filter((i) => i.op === "FROM")) {
      const [ref, as, name] = from.args.split(/\s+/);
      if (stageNames.has(ref!)) continue;
      const arg = /^\$\{([A-Z_]+)\}$/.exec(ref!);
      const resolved = arg ? globalArgs.get(arg[1]!) : ref;
      expect(resolved, `${at(from)}: ${ref} must be declared with a default before the first FROM`).toBeDefined();
      expect(resolved, `${at(from)}: never latest`).not.toMatch(/:latest$/);
      expect(isPinned(resolved!), `${at(from)}: ${resolved} is not pinned to a release or digest`).toBe(true);
      expect(arg, `${at(from)}: name the base through an ARG so builders can pin its digest`).not.toBeNull();
      if (as?.toUpperCase() === "AS") stageNames.add(name!);
    }
    expect(stages.length, "multi-stage").toBeGreaterThanOrEqual(2);
  });

  it("runs the final image as a fixed non-root uid, with a health check, exec-form entry point and OCI labels", () => {
    const user = finalStage.filter((i) => i.op === "USER").pop();
    expect(user, "USER in the final stage").toBeDefined();
    expect(user!.args).toMatch(/^[1-9][0-9]*(:[1-9][0-9]*)?$/);
    // Nothing after USER runs as root again.
    expect(finalStage.slice(finalStage.indexOf(user!)).some((i) => i.op === "RUN")).toBe(false);
    const health = finalStage.find((i) => i.op === "HEALTHCHECK");
    expect(health?.args, "HEALTHCHECK").toMatch(/CMD \[/);
    for (const op of ["ENTRYPOINT", "CMD"]) expect(JSON.parse(finalStage.find((i) => i.op === op)!.args), op).toBeInstanceOf(Array);
    const labels = finalStage.filter((i) => i.op === "LABEL").map((i) => i.args).join(" ");
    for (const key of ["title", "description", "version", "revision", "licenses"]) expect(labels).toContain(`org.opencontainers.image.${key}=`);
    expect(finalStage.some((i) => i.op === "STOPSIGNAL" && i.args === "SIGTERM")).toBe(true);
  });

  it("keeps the final image to the pruned install: no compiler, no dev dependencies, no build context", () => {
    const copies = finalStage.filter((i) => i.op === "COPY");
    for (const c of copies) expect(c.args, `${at(c)}: the runtime copies only from the build stages`).toMatch(/^--from=/);
    expect(finalStage.some((i) => i.op === "RUN" && /apt-get install|npm install|pnpm/.test(i.args))).toBe(false);
    const build = ins.find((i) => i.op === "RUN" && /pnpm .*deploy/.test(i.args));
    expect(build?.args).toMatch(/--prod/);
    expect(build?.args).toMatch(/--offline/);
  });

  it("follows hadolint's rules for RUN, COPY and WORKDIR", () => {
    for (const i of ins) {
      if (i.op === "RUN" && /apt-get install/.test(i.args)) {
        expect(i.args, `${at(i)}: DL3015`).toContain("--no-install-recommends");
        expect(i.args, `${at(i)}: DL3009`).toContain("rm -rf /var/lib/apt/lists/*");
        expect(i.args, `${at(i)}: DL3014`).toMatch(/install -y/);
        expect(i.args, `${at(i)}: DL3027 (apt, not apt-get)`).not.toMatch(/(^|\s)apt\s/);
      }
      if (i.op === "RUN" && /npm install -g/.test(i.args)) expect(i.args, `${at(i)}: DL3016`).toMatch(/@(\$\{[A-Z_]+\}|[0-9]+\.[0-9]+\.[0-9]+)/);
      if (i.op === "RUN") expect(i.args, `${at(i)}: DL3004`).not.toMatch(/\bsudo\b/);
      if (i.op === "RUN") expect(i.args, `${at(i)}: DL3001 / no network fetches`).not.toMatch(/\b(curl|wget)\b/);
      expect(i.op, `${at(i)}: DL3020`).not.toBe("ADD");
      if (i.op === "WORKDIR") expect(i.args, `${at(i)}: DL3000`).toMatch(/^\//);
      if (i.op === "EXPOSE") expect(i.args).toMatch(/^[0-9 ]+$/);
    }
  });

  it("copies only files that exist in the repository", () => {
    for (const c of ins.filter((i) => i.op === "COPY" && !i.args.startsWith("--from="))) {
      const parts = c.args.split(/\s+/).filter((p) => !p.startsWith("--"));
      for (const src of parts.slice(0, -1)) if (src !== ".") expect(existsSync(join(repoRoot, src)), `${at(c)}: ${src} does not exist`).toBe(true);
    }
    for (const m of text.matchAll(/cp (docker\/[^\s]+)/g)) expect(existsSync(join(repoRoot, m[1]!)), m[1]).toBe(true);
  });
});

describe(".dockerignore", () => {
  it("keeps installs, build outputs, git and local secrets out of the build context", () => {
    const lines = readFileSync(join(repoRoot, ".dockerignore"), "utf8").split("\n").map((l) => l.trim());
    for (const p of [".git", "**/node_modules", "**/dist", ".lathe", "**/.env"]) expect(lines).toContain(p);
  });
});

describe("the CUDA image", () => {
  it("builds the engine for sm_80 and sm_90, CPU-only until the CUDA backend exists, and says so", () => {
    const text = readFileSync(join(repoRoot, "docker/node-cuda.Dockerfile"), "utf8");
    expect(text).toContain('ARG CUDA_ARCHITECTURES="80;90"');
    expect(text).toContain("ARG ENGINE_CUDA=OFF");
    expect(text).toContain('-DLATHE_CUDA="${ENGINE_CUDA}"');
    expect(text).toMatch(/CUDA BACKEND DOES NOT EXIST YET/);
  });
});
