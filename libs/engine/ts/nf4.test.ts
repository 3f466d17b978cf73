// QLoRA through the binding: nf4Roundtrip agrees bit for bit with the PyTorch reference's golden
// file (test/nf4_reference.py), and a model whose linears are quantised to NF4 trains, reports
// its smaller base memory and refuses what it can no longer do.
import { execFile } from "node:child_process";
import { readFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { readModelConfig, writeTinyModel } from "@lathe/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EngineError, Model, NF4_MODULES, nf4Roundtrip } from "./index.js";
import { lossBeforeAndAfterSteps, nextTokenBatch } from "./test-support/steps.js";

const GOLDEN = fileURLToPath(new URL("../test/nf4-golden.bin", import.meta.url));

let dir = "";
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "lathe-engine-nf4-"));
  await writeTinyModel(dir, { hidden: 64, intermediate: 128, seed: 3 });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("nf4Roundtrip", () => {
  it("test/nf4_reference.py (plain torch) regenerates test/nf4-golden.bin byte for byte", async () => {
    const out = path.join(dir, "nf4-golden.bin");
    await promisify(execFile)("/usr/bin/python3", [fileURLToPath(new URL("../test/nf4_reference.py", import.meta.url)), "--out", out]).catch(
      (err: Error & { stderr?: string }) => {
        throw new Error(`/usr/bin/python3 test/nf4_reference.py failed (python3-torch installed?): ${err.stderr ?? err.message}`);
      },
    );
    expect((await readFile(out)).equals(await readFile(GOLDEN))).toBe(true);
  }, 60_000);

  it("matches the PyTorch reference's codes and dequantised values exactly", async () => {
    const buf = await readFile(GOLDEN);
    expect(buf.subarray(0, 4).toString("latin1")).toBe("LNF4");
    const n = buf.readUInt32LE(8);
    let at = 12 + 16 * 4 + 256 * 4;
    const f32 = (count: number): Float32Array => {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = buf.readFloatLE(at + 4 * i);
      at += 4 * count;
      return out;
    };
    const input = f32(n);
    const codeBytes = Math.floor((n + 1) / 2);
    const codes = new Uint8Array(buf.subarray(at, at + codeBytes));
    at += codeBytes;
    const values = f32(n);
    const got = nf4Roundtrip(input);
    expect(Buffer.from(got.codes).equals(Buffer.from(codes))).toBe(true);
    expect(Buffer.from(got.values.buffer).equals(Buffer.from(values.buffer))).toBe(true);
  });

  it("round-trips codebook multiples of the block absmax exactly, first element in the high nibble", () => {
    const nf4 = [-1, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
      -0.09105003625154495, 0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
      0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1];
    const idx = Array.from({ length: 128 }, (_, i) => (i * 7) % 16);
    const input = Float32Array.from(idx, (k) => nf4[k]! * 0.5);
    const { values, codes } = nf4Roundtrip(input);
    expect([...values]).toEqual([...input]);
    expect(codes[0]).toBe((idx[0]! << 4) | idx[1]!);
  });

  it("rejects non-finite values with INVALID_ARGUMENT", () => {
    expect(() => nf4Roundtrip(Float32Array.of(1, Number.NaN))).toThrow(EngineError);
  });
});

describe("quantizeNf4", () => {
  it("shrinks the base linears to under 0.6 bytes per parameter, and forwardBackward still trains", async () => {
    const f32 = await Model.load(dir, { numThreads: 2 });
    const q = await Model.load(dir, { numThreads: 2 });
    try {
      const config = await readModelConfig(dir);
      const batch = nextTokenBatch(2, 16, config.vocabSize);
      for (const m of [f32, q]) m.loraInit({ r: 4, alpha: 8, targetModules: [...NF4_MODULES], seed: 1 });
      const before = q.memory();
      q.quantizeNf4();
      const after = q.memory();
      expect(after.baseParams).toBe(before.baseParams);
      const c = q.config;
      const perLayer = c.hiddenSize * (c.numHeads * c.headDim) * 2 + c.hiddenSize * (c.numKvHeads * c.headDim) * 2 + 3 * c.hiddenSize * c.intermediateSize;
      const linParams = perLayer * c.numLayers;
      const linBytes = after.baseBytes - (before.baseBytes - 4 * linParams);
      expect(linBytes / linParams).toBeLessThan(0.6);
      expect(after.baseBytes).toBeLessThan(before.baseBytes);

      const lossF32 = (await f32.forwardBackward(batch, { backward: false, training: false })).loss;
      const { first, last } = await lossBeforeAndAfterSteps(q, batch);
      expect(Math.abs(first - lossF32) / lossF32).toBeLessThan(2e-2);
      expect(last).toBeLessThan(first);
    } finally {
      f32.free();
      q.free();
    }
  });

  it("refuses lm_head, and setWeight on a quantised weight, with INVALID_ARGUMENT", async () => {
    const model = await Model.load(dir, { numThreads: 1 });
    try {
      expect(() => model.quantizeNf4(["lm_head"])).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
      model.quantizeNf4(["q_proj"]);
      const c = model.config;
      expect(() => model.setWeight("model.layers.0.self_attn.q_proj.weight", new Float32Array(c.numHeads * c.headDim * c.hiddenSize))).toThrow(
        expect.objectContaining({ code: "INVALID_ARGUMENT" }),
      );
    } finally {
      model.free();
    }
  });
});
