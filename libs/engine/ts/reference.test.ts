// test/reference.py (PyTorch, Debian's python3-torch) regenerates the committed golden files:
// the same inputs exactly, the same expected values up to float rounding across BLAS builds.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { expect, it } from "vitest";
import { ENGINE_DIR, GOLDEN_DIR, expectCloseArrays, expectCloseScalar, goldenCaseNames, readGoldenCase } from "./test-support/golden.js";

const run = promisify(execFile);
const PYTHON = "/usr/bin/python3";

it("test/reference.py regenerates the committed golden files", async () => {
  const out = await mkdtemp(path.join(tmpdir(), "lathe-golden-"));
  try {
    await run(PYTHON, [path.join(ENGINE_DIR, "test", "reference.py"), "--out", out], { cwd: ENGINE_DIR }).catch((err: Error & { stderr?: string }) => {
      throw new Error(`${PYTHON} test/reference.py failed (python3-torch installed? \`apt-get install -y python3-torch\`): ${err.stderr ?? err.message}`);
    });
    const names = await goldenCaseNames();
    expect(await goldenCaseNames(out)).toEqual(names);
    for (const name of names) {
      for (const file of ["case.json", "lora-init.safetensors"]) {
        expect((await readFile(path.join(out, name, file))).equals(await readFile(path.join(GOLDEN_DIR, name, file))), `${name}/${file} differs`).toBe(true);
      }
      const fresh = await readGoldenCase(name, out);
      const committed = await readGoldenCase(name);
      expectCloseScalar(`${name} loss`, fresh.expected.loss, committed.expected.loss, 1e-9);
      committed.expected.gradNorms.forEach((n, i) => expectCloseScalar(`${name} grad norm ${i}`, fresh.expected.gradNorms[i]!, n, 1e-9));
      for (const [tensor, want] of committed.tensors) expectCloseArrays(`${name} ${tensor}`, fresh.tensors.get(tensor)!, want, 1e-6);
    }
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}, 120_000);
