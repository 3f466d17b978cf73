import { mkdtemp, rm, symlink, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkSecretRef, resolveSecret } from "./secrets.js";
import type { AppError } from "./errors.js";

// A tenant names a secret and a URL it is sent to: only what the operator allows may be read.
let dir = "";
let saved: string | undefined;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "lathe-secrets-"));
  await mkdir(join(dir, "allowed"));
  await writeFile(join(dir, "allowed", "teacher"), "sk-teacher\n");
  await writeFile(join(dir, "outside"), "database password");
  await symlink(join(dir, "outside"), join(dir, "allowed", "link"));
  saved = process.env["LATHE_SECRET_REFS"];
  process.env["LATHE_SECRET_REFS"] = `env:LATHE_SECRET_*,env:TEACHER_KEY,file:${dir}/allowed/*`;
  process.env["LATHE_SECRET_TEACHER"] = " sk-env ";
  process.env["TEACHER_KEY"] = "sk-exact";
  process.env["LATHE_UNLISTED"] = "postgres://user:password@db/lathe";
});
afterAll(async () => {
  if (saved === undefined) delete process.env["LATHE_SECRET_REFS"];
  else process.env["LATHE_SECRET_REFS"] = saved;
  await rm(dir, { recursive: true, force: true });
});

const refused = (p: Promise<unknown>) => p.then(() => expect.unreachable("resolved"), (e: unknown) => e as AppError);

describe("secrets a request may name", () => {
  it("reads what the operator's list allows", async () => {
    expect(await resolveSecret("env:LATHE_SECRET_TEACHER")).toBe("sk-env");
    expect(await resolveSecret("env:TEACHER_KEY")).toBe("sk-exact");
    expect(await resolveSecret(`file:${dir}/allowed/teacher`)).toBe("sk-teacher");
    expect(await resolveSecret("")).toBe("");
  });

  it("refuses the rest, at the request (naming the field) and where it is read, never saying the value", async () => {
    for (const ref of ["env:LATHE_UNLISTED", "env:TEACHER_KEY_2", "file:/etc/passwd", `file:${dir}/allowed/../outside`, `file:${dir}/outside`]) {
      expect(() => checkSecretRef("teacher.api_key_secret", ref)).toThrow(/is not a secret this platform lets requests name/);
      const e = await refused(resolveSecret(ref, "the teacher's API key"));
      expect(e).toMatchObject({ code: "FAILED_PRECONDITION", reason: "SECRET_NOT_ALLOWED" });
      expect(e.message).not.toContain("password");
    }
    expect(() => checkSecretRef("teacher.api_key_secret", "sk-the-key")).toThrow(/never hold the key itself/);
    // A link in an allowed folder that leads out of it.
    expect(checkSecretRef("f", `file:${dir}/allowed/link`)).toBe(`file:${dir}/allowed/link`);
    const e = await refused(resolveSecret(`file:${dir}/allowed/link`));
    expect(e).toMatchObject({ reason: "SECRET_NOT_ALLOWED" });
    expect(e.message).not.toContain("database password");
  });

  it("allows by default only LATHE_SECRET_ variables and files under /var/run/secrets/lathe/", () => {
    const list = process.env["LATHE_SECRET_REFS"];
    delete process.env["LATHE_SECRET_REFS"];
    try {
      expect(checkSecretRef("f", "env:LATHE_SECRET_X")).toBe("env:LATHE_SECRET_X");
      expect(checkSecretRef("f", "file:/var/run/secrets/lathe/teacher")).toBe("file:/var/run/secrets/lathe/teacher");
      expect(() => checkSecretRef("f", "env:LATHE_PG_URL")).toThrow(/LATHE_SECRET_REFS allows env:LATHE_SECRET_\*, file:\/var\/run\/secrets\/lathe\/\*/);
      expect(() => checkSecretRef("f", "file:/var/run/secrets/lathe/../kubernetes.io/serviceaccount/token")).toThrow(/not a secret/);
    } finally {
      process.env["LATHE_SECRET_REFS"] = list;
    }
  });
});
