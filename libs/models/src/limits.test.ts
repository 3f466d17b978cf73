import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, symlink, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFormatError, inspectModelFolder, listTensors, loadTokenizer, readGgufHeader, readModelConfig, readPeftAdapter, writeTinyAdapter, writeTinyModel } from "./index.js";

/** A .safetensors file: the 8-byte length (`declared`, or the header's own), the header, then `data` bytes. */
function safetensors(header: unknown, data: number, declared?: bigint): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(declared ?? BigInt(json.length));
  return Buffer.concat([prefix, json, Buffer.alloc(data)]);
}

/** A GGUF v3 header: magic, version, tensor count, metadata count, then `rest`. */
function gguf(tensors: bigint, kvs: bigint, ...rest: Buffer[]): Buffer {
  const counts = Buffer.alloc(16);
  counts.writeBigUInt64LE(tensors, 0);
  counts.writeBigUInt64LE(kvs, 8);
  return Buffer.concat([Buffer.from("GGUF"), Buffer.from([3, 0, 0, 0]), counts, ...rest]);
}
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};
const str = (s: string): Buffer => Buffer.concat([u64(BigInt(Buffer.byteLength(s))), Buffer.from(s)]);

async function editJson(file: string, edit: (json: Record<string, unknown>) => void): Promise<void> {
  const json = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
  edit(json);
  await writeFile(file, JSON.stringify(json, null, 2));
}

async function refusal(promise: Promise<unknown>): Promise<ModelFormatError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ModelFormatError);
  return err as ModelFormatError;
}

describe("sizes a model folder declares", () => {
  let root: string;
  let n = 0;
  const fresh = (): string => path.join(root, String(n++));
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lathe-limits-"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("refuses num_hidden_layers 1000000000 before building anything from it", async () => {
    const dir = fresh();
    await writeTinyModel(dir);
    await editJson(path.join(dir, "config.json"), (json) => {
      json["num_hidden_layers"] = 1_000_000_000;
    });
    const err = await refusal(inspectModelFolder(dir));
    expect(err.file).toBe(path.join(dir, "config.json"));
    expect(err.message).toContain("config.json: `num_hidden_layers` is 1000000000; at most 1024 are supported");
  });

  it("refuses each size past its maximum, naming the field", async () => {
    const dir = fresh();
    await writeTinyModel(dir);
    const file = path.join(dir, "config.json");
    const original = await readFile(file, "utf8");
    const cases: Array<[string, unknown, string]> = [
      ["hidden_size", 1 << 30, "`hidden_size` is 1073741824; at most 131072 are supported"],
      ["intermediate_size", 2 ** 40, "`intermediate_size` is 1099511627776"],
      ["vocab_size", 1e12, "`vocab_size` is 1000000000000; at most 4194304 are supported"],
      ["num_attention_heads", 1e6, "`num_attention_heads` is 1000000"],
      ["num_key_value_heads", 1e6, "`num_key_value_heads` is 1000000"],
      ["head_dim", 1e6, "`head_dim` is 1000000"],
      ["max_position_embeddings", 2 ** 50, "`max_position_embeddings` is 1125899906842624; at most 16777216 are supported"],
      ["rope_theta", 1e300, "`rope_theta` is 1e+300"],
      ["num_hidden_layers", Number.MAX_SAFE_INTEGER + 2, "`num_hidden_layers` must be a positive integer"],
    ];
    for (const [field, value, message] of cases) {
      await writeFile(file, JSON.stringify({ ...(JSON.parse(original) as object), [field]: value }));
      const err = await refusal(readModelConfig(dir));
      expect(err.file).toBe(file);
      expect(err.message).toContain(message);
    }
  });

  it("reads no file that is not a regular one (a pipe, /dev/zero) or that is past its size limit", async () => {
    const pipe = fresh();
    await mkdir(pipe);
    execFileSync("mkfifo", [path.join(pipe, "config.json")]);
    expect((await refusal(readModelConfig(pipe))).message).toContain("config.json: is not a regular file");
    execFileSync("mkfifo", [path.join(pipe, "model-00001-of-00001.safetensors")]);
    await writeFile(path.join(pipe, "model.safetensors.index.json"), JSON.stringify({ weight_map: { a: "model-00001-of-00001.safetensors" } }));
    expect((await refusal(listTensors(pipe))).message).toContain("model-00001-of-00001.safetensors: is not a regular file");

    const zero = fresh();
    await mkdir(zero);
    await symlink("/dev/zero", path.join(zero, "config.json"));
    expect((await refusal(readModelConfig(zero))).message).toContain("config.json: is not a regular file");

    const large = fresh();
    await mkdir(large);
    await writeFile(path.join(large, "config.json"), "{}");
    await truncate(path.join(large, "config.json"), 17 << 20);
    expect((await refusal(readModelConfig(large))).message).toContain(`config.json: is ${17 << 20} bytes; at most ${16 << 20} are read`);
  });

  it("refuses safetensors headers whose length, rank or shape cannot be right, before allocating from them", async () => {
    const dir = fresh();
    await mkdir(dir);
    const file = path.join(dir, "model.safetensors");
    const tensor = { dtype: "F32", shape: [2], data_offsets: [0, 8] };
    await writeFile(file, safetensors({ a: tensor }, 8, 2n ** 64n - 1n));
    expect((await refusal(listTensors(dir))).message).toContain("header length 18446744073709551615 does not fit in the file");
    await writeFile(file, safetensors({ a: tensor }, 8, 100_000_001n));
    await truncate(file, 100_000_100);
    expect((await refusal(listTensors(dir))).message).toContain("header length is 100000001 bytes; at most 100000000 are supported");
    // 2^90 elements: as numbers the product rounds, as bigints it is exact and cannot match the span.
    await writeFile(file, safetensors({ a: { dtype: "F32", shape: [2 ** 30, 2 ** 30, 2 ** 30], data_offsets: [0, 8] } }, 8));
    expect((await refusal(listTensors(dir))).message).toContain("but F32 of shape [1073741824, 1073741824, 1073741824] needs 4951760157141521099596496896");
    await writeFile(file, safetensors({ a: { dtype: "F32", shape: [1, 1, 1, 1, 1, 1, 1, 1, 2], data_offsets: [0, 8] } }, 8));
    expect((await refusal(listTensors(dir))).message).toContain("tensor `a`: `shape` has 9 dimensions; at most 8 are supported");
    await writeFile(file, safetensors({ ["x".repeat(2000)]: tensor }, 8));
    expect((await refusal(listTensors(dir))).message).toContain("a tensor name is 2000 characters long; at most 1024 are supported");
  });

  it("refuses GGUF counts, lengths and dims that the rest of the file cannot hold", async () => {
    const dir = fresh();
    await mkdir(dir);
    const file = path.join(dir, "x.gguf");
    const expectRefusal = async (bytes: Buffer, message: string): Promise<void> => {
      await writeFile(file, bytes);
      expect((await refusal(readGgufHeader(file))).message).toContain(message);
    };
    await expectRefusal(gguf(2n ** 64n - 1n, 0n), "the tensor count is 18446744073709551615, more than the 8 bytes left in the file can hold");
    await expectRefusal(gguf(0n, 2n ** 40n), "the metadata count is 1099511627776, more than the 0 bytes left");
    await expectRefusal(gguf(0n, 1n, u64(2n ** 62n), Buffer.alloc(16)), "a string of 4611686018427387904 bytes at byte 24 runs past the end of the 48-byte file");
    await expectRefusal(gguf(0n, 1n, str("k"), u32(9), u32(4), u64(2n ** 50n), Buffer.alloc(8)), "the array at byte 37 is 1125899906842624, more than the 8 bytes left");
    await expectRefusal(gguf(0n, 1n, str("k"), u32(9), u32(9), u64(1n), u32(9), u64(1n), u32(0), u64(0n)), "arrays nest deeper than 2");
    await expectRefusal(gguf(0n, 1n, str("general.alignment"), u32(4), u32(0)), "general.alignment must be a uint32 power of two");
    await expectRefusal(gguf(1n, 0n, str("t"), u32(5), Buffer.alloc(64)), "tensor 0 has 5 dimensions; at most 4 are supported");
    await expectRefusal(gguf(1n, 0n, str("t"), u32(2), u64(2n ** 40n), u64(2n ** 40n), u32(0), u64(0n)), "tensor 0 has dimensions past what 65 bytes can hold");
    await writeFile(file, gguf(1n, 1n, str("general.alignment"), u32(4), u32(64), str("t"), u32(1), u64(4n), u32(0), u64(0n)));
    expect(await readGgufHeader(file)).toMatchObject({ alignment: 64, tensors: [{ name: "t", dims: [4], type: 0, offset: 0 }] });
  });

  it("refuses tokenizer vocabularies with ids past the limit, and names tokenizer_config.json for its own fields", async () => {
    const dir = fresh();
    await writeTinyModel(dir);
    const tokenizerFile = path.join(dir, "tokenizer.json");
    const original = await readFile(tokenizerFile, "utf8");
    await editJson(tokenizerFile, (json) => {
      (json["added_tokens"] as Array<Record<string, unknown>>)[0]!["id"] = 2 ** 40;
    });
    expect((await refusal(loadTokenizer(dir))).message).toContain("tokenizer.json: added_tokens[0] needs an id from 0 to 4194303 and a string content");
    await writeFile(tokenizerFile, original);
    await editJson(tokenizerFile, (json) => {
      ((json["model"] as Record<string, unknown>)["vocab"] as Record<string, unknown>)["the"] = -3;
    });
    expect((await refusal(loadTokenizer(dir))).message).toContain('tokenizer.json: model.vocab: token "the" has id -3');
    await writeFile(tokenizerFile, original);
    await editJson(path.join(dir, "tokenizer_config.json"), (json) => {
      json["additional_special_tokens"] = "<|im_end|>";
    });
    expect((await refusal(loadTokenizer(dir))).message).toContain("tokenizer_config.json: `additional_special_tokens` must be a list");
  });

  it("refuses adapter_config.json sizes past their limits", async () => {
    const base = fresh();
    await writeTinyModel(base, { layers: 1 });
    const dir = fresh();
    await writeTinyAdapter(dir, base, { r: 2 });
    const file = path.join(dir, "adapter_config.json");
    const original = await readFile(file, "utf8");
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ r: 1e9 }, "`r` is 1000000000; at most 16384 is supported"],
      [{ lora_alpha: 1e300 }, "`lora_alpha` is 1e+300; at most 1000000 is supported"],
      [{ target_modules: Array.from({ length: 2000 }, (_, i) => `m${i}`) }, "`target_modules` lists 2000 modules; at most 1024 are supported"],
      [{ target_modules: "x".repeat(5000) }, "`target_modules` holds a name or pattern of 5000 characters; at most 4096 are supported"],
    ];
    for (const [change, message] of cases) {
      await writeFile(file, JSON.stringify({ ...(JSON.parse(original) as object), ...change }));
      const err = await refusal(readPeftAdapter(dir));
      expect(err.file).toBe(file);
      expect(err.message).toContain(message);
    }
  });

  it("checks the tensors a large config implies only as far as the weights go", async () => {
    const dir = fresh();
    await writeTinyModel(dir, { layers: 2 });
    await editJson(path.join(dir, "config.json"), (json) => {
      json["num_hidden_layers"] = 1024;
    });
    const err = await refusal(inspectModelFolder(dir));
    expect(err.file).toBe(path.join(dir, "model.safetensors"));
    expect(err.message).toContain("tensor `model.layers.2.input_layernorm.weight` is missing");
  });
});
