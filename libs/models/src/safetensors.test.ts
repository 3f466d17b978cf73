import { mkdir, mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFormatError, listTensors, parameterCount, readTensorF32, writeSafetensors, type Dtype } from "./index.js";

/** A header as the file holds it, for tests that damage files by hand. */
function header(bytes: Buffer): { length: number; json: Record<string, unknown> } {
  const length = Number(bytes.readBigUInt64LE(0));
  return { length, json: JSON.parse(bytes.subarray(8, 8 + length).toString("utf8")) as Record<string, unknown> };
}

/** A .safetensors file from a header object and data bytes, unpadded, as another writer might make it. */
function handMade(json: Record<string, unknown>, data: Uint8Array): Buffer {
  const text = Buffer.from(JSON.stringify(json), "utf8");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(text.length));
  return Buffer.concat([prefix, text, data]);
}

async function expectFormatError(promise: Promise<unknown>, file: string, ...fragments: string[]): Promise<void> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ModelFormatError);
  expect((err as ModelFormatError).file).toBe(file);
  for (const fragment of fragments) expect((err as Error).message).toContain(fragment);
}

describe("safetensors", () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lathe-safetensors-"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("round-trips f32 exactly, with an 8-byte aligned header and tensors in name order", async () => {
    const dir = path.join(root, "f32");
    await mkdir(dir);
    const values = Float32Array.from([0, -0, 1.5, -3.25e-20, 6.02e23, Infinity, -Infinity, NaN, 1e-45, 0.1]);
    await writeSafetensors(
      path.join(dir, "model.safetensors"),
      [
        { name: "z.weight", dtype: "F32", shape: [2, 5], data: values },
        { name: "a.weight", dtype: "F32", shape: [3], data: Float32Array.from([1, 2, 3]) },
      ],
      { format: "pt" },
    );
    const bytes = await readFile(path.join(dir, "model.safetensors"));
    const { length, json } = header(bytes);
    expect(length % 8).toBe(0);
    expect(Object.keys(json)).toEqual(["__metadata__", "a.weight", "z.weight"]);
    expect(json["a.weight"]).toEqual({ dtype: "F32", shape: [3], data_offsets: [0, 12] });
    expect(json["z.weight"]).toEqual({ dtype: "F32", shape: [2, 5], data_offsets: [12, 52] });

    const tensors = await listTensors(dir);
    expect(tensors.map((t) => [t.name, t.offset, t.byteLength])).toEqual([
      ["a.weight", 8 + length, 12],
      ["z.weight", 8 + length + 12, 40],
    ]);
    expect(Object.is((await readTensorF32(tensors[1]!))[1], -0)).toBe(true);
    expect([...(await readTensorF32(tensors[1]!))]).toEqual([...values]);
    expect(parameterCount(tensors)).toBe(13);
  });

  it("round-trips f16: representable values exactly, others to the nearest (ties to even), overflow to infinity", async () => {
    const dir = path.join(root, "f16");
    await mkdir(dir);
    const exact = [0, -0, 1, -2, 0.5, 65504, -65504, 2 ** -14, 2 ** -24, 3 * 2 ** -24, 1 + 2 ** -10, Infinity, -Infinity];
    // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1).
    // 1 + 3·2^-11 lies halfway between 1 + 2^-10 and 1 + 2^-9: the even one is 1 + 2^-9.
    const rounded: Array<[number, number]> = [
      [1 + 2 ** -11, 1],
      [1 + 3 * 2 ** -11, 1 + 2 ** -9],
      [0.1, 0.0999755859375],
      [70000, Infinity],
      [2 ** -26, 0],
      [3 * 2 ** -26, 2 ** -24],
    ];
    const input = Float32Array.from([...exact, ...rounded.map(([x]) => x), NaN]);
    await writeSafetensors(path.join(dir, "model.safetensors"), [{ name: "t", dtype: "F16", shape: [input.length], data: input }]);
    const [t] = await listTensors(dir);
    expect(t?.dtype).toBe("F16");
    expect(t?.byteLength).toBe(input.length * 2);
    const back = [...(await readTensorF32(t!))];
    expect(back.slice(0, exact.length)).toEqual(exact);
    expect(back.slice(exact.length, exact.length + rounded.length)).toEqual(rounded.map(([, y]) => y));
    expect(back.at(-1)).toBeNaN();
  });

  it("round-trips bf16 to 8 significant bits, rounding to nearest with ties to even", async () => {
    const dir = path.join(root, "bf16");
    await mkdir(dir);
    const exact = [0, 1, -1.5, 2 ** 100, 2 ** -130, 1 + 2 ** -7, Infinity];
    // bf16 keeps 7 stored mantissa bits: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 and goes to 1;
    // 1 + 3·2^-8 is a tie between 1 + 2^-7 and 1 + 2^-6 and goes to 1 + 2^-6; the largest f32 overflows.
    const rounded: Array<[number, number]> = [
      [1 + 2 ** -8, 1],
      [1 + 3 * 2 ** -8, 1 + 2 ** -6],
      [1 + 2 ** -8 + 2 ** -20, 1 + 2 ** -7],
      [Math.PI, 3.140625],
      [3.4028234663852886e38, Infinity],
    ];
    const input = Float32Array.from([...exact, ...rounded.map(([x]) => x), NaN]);
    await writeSafetensors(path.join(dir, "model.safetensors"), [{ name: "t", dtype: "BF16", shape: [input.length], data: input }]);
    const [t] = await listTensors(dir);
    const back = [...(await readTensorF32(t!))];
    expect(back.slice(0, exact.length)).toEqual(exact);
    expect(back.slice(exact.length, exact.length + rounded.length)).toEqual(rounded.map(([, y]) => y));
    expect(back.at(-1)).toBeNaN();

    const random = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i * 12.9898) * 43758.5453 * 10 ** ((i % 9) - 4));
    await writeSafetensors(path.join(dir, "model.safetensors"), [{ name: "t", dtype: "BF16", shape: [1000], data: random }]);
    const approx = await readTensorF32((await listTensors(dir))[0]!);
    random.forEach((x, i) => expect(Math.abs(approx[i]! - x)).toBeLessThanOrEqual(Math.abs(x) * 2 ** -8));
  });

  it("lists the tensors of every shard named by model.safetensors.index.json", async () => {
    const dir = path.join(root, "sharded");
    await mkdir(dir);
    const shard1 = "model-00001-of-00002.safetensors";
    const shard2 = "model-00002-of-00002.safetensors";
    await writeSafetensors(path.join(dir, shard1), [
      { name: "model.embed_tokens.weight", dtype: "BF16", shape: [4, 2], data: new Float32Array(8).fill(0.5) },
      { name: "model.norm.weight", dtype: "F32", shape: [2], data: Float32Array.from([1, 1]) },
    ]);
    await writeSafetensors(path.join(dir, shard2), [{ name: "lm_head.weight", dtype: "F16", shape: [4, 2], data: new Float32Array(8).fill(-2) }]);
    const index = {
      metadata: { total_size: 16 + 8 + 16 },
      weight_map: { "lm_head.weight": shard2, "model.embed_tokens.weight": shard1, "model.norm.weight": shard1 },
    };
    await writeFile(path.join(dir, "model.safetensors.index.json"), JSON.stringify(index));

    const tensors = await listTensors(dir);
    expect(tensors.map((t) => [t.name, t.dtype, path.basename(t.file)])).toEqual([
      ["lm_head.weight", "F16", shard2],
      ["model.embed_tokens.weight", "BF16", shard1],
      ["model.norm.weight", "F32", shard1],
    ]);
    expect([...(await readTensorF32(tensors[0]!))]).toEqual(new Array(8).fill(-2));
    expect(parameterCount(tensors)).toBe(18);

    const wrong = { weight_map: { ...index.weight_map, "model.norm.weight": shard2 } };
    await writeFile(path.join(dir, "model.safetensors.index.json"), JSON.stringify(wrong));
    await expectFormatError(listTensors(dir), path.join(dir, "model.safetensors.index.json"), "`model.norm.weight`", shard2);

    const escaping = { weight_map: { "model.norm.weight": "../elsewhere.safetensors" } };
    await writeFile(path.join(dir, "model.safetensors.index.json"), JSON.stringify(escaping));
    await expectFormatError(listTensors(dir), path.join(dir, "model.safetensors.index.json"), "`model.norm.weight`");
  });

  it("names the file when there are no weights or the header is corrupted", async () => {
    const dir = path.join(root, "corrupt");
    await mkdir(dir);
    const file = path.join(dir, "model.safetensors");
    await expectFormatError(listTensors(dir), file, "missing");

    await writeFile(file, handMade({ t: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)));
    const bytes = await readFile(file);
    bytes[9] = 0x7b; // a stray "{" where the first key should start
    await writeFile(file, bytes);
    await expectFormatError(listTensors(dir), file, "header is not valid JSON");

    const huge = Buffer.alloc(16);
    huge.writeBigUInt64LE(1n << 40n);
    await writeFile(file, huge);
    await expectFormatError(listTensors(dir), file, "header length");

    await writeFile(file, Buffer.alloc(3));
    await expectFormatError(listTensors(dir), file, "too short");
  });

  it("names the file and tensor for a truncated file, an unsupported dtype, bad offsets", async () => {
    const dir = path.join(root, "tensor-errors");
    await mkdir(dir);
    const file = path.join(dir, "model.safetensors");
    await writeSafetensors(file, [
      { name: "a", dtype: "F32", shape: [4], data: new Float32Array(4) },
      { name: "b", dtype: "F32", shape: [4], data: new Float32Array(4) },
    ]);
    const { length } = header(await readFile(file));
    await truncate(file, 8 + length + 20);
    await expectFormatError(listTensors(dir), file, "tensor `b`", "truncated");

    await writeFile(file, handMade({ ids: { dtype: "I64", shape: [2], data_offsets: [0, 16] } }, new Uint8Array(16)));
    await expectFormatError(listTensors(dir), file, "tensor `ids`", "I64", "not supported");

    await writeFile(file, handMade({ w: { dtype: "F16", shape: [2, 3], data_offsets: [0, 8] } }, new Uint8Array(8)));
    await expectFormatError(listTensors(dir), file, "tensor `w`", "needs 12");

    const overlapping = {
      x: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      y: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
    };
    await writeFile(file, handMade(overlapping, new Uint8Array(12)));
    await expectFormatError(listTensors(dir), file, "tensor `y`", "overlap");

    await writeFile(file, handMade({ x: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, new Uint8Array(9)));
    await expectFormatError(listTensors(dir), file, "5 bytes follow the last tensor");
  });

  it("refuses data whose length does not match the shape", async () => {
    const dtype: Dtype = "F32";
    await expect(writeSafetensors(path.join(root, "bad.safetensors"), [{ name: "t", dtype, shape: [2, 2], data: new Float32Array(3) }])).rejects.toThrow(
      /3 values for shape \[2, 2\]/,
    );
  });
});
