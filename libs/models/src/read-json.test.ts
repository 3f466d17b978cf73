import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFormatError, listTensors, loadTokenizer, readModelConfig, readPeftAdapter, writeTinyModel } from "./index.js";

/** What /etc/passwd or a key file might hold: none of it may reach an error message. */
const SECRET = "root:x:0:0:hunter2-SECRET-7f3a9c";

async function message(promise: Promise<unknown>): Promise<string> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ModelFormatError);
  return (err as Error).message;
}

describe("errors about files that are not JSON", () => {
  let root: string;
  let n = 0;
  const fresh = async (): Promise<string> => {
    const dir = path.join(root, String(n++));
    await mkdir(dir);
    return dir;
  };
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lathe-read-json-"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("say where config.json stops being JSON without quoting what it holds", async () => {
    const dir = await fresh();
    await writeFile(path.join(dir, "config.json"), `${SECRET}\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n`);
    const text = await message(readModelConfig(dir));
    expect(text).toBe(`${path.join(dir, "config.json")}: invalid JSON at line 1 column 1 (byte 0)`);
    expect(text).not.toContain("hunter2");
    expect(text).not.toContain("root:x");
  });

  it("give the byte of an error deep in the file, still without its text", async () => {
    const dir = await fresh();
    await writeFile(path.join(dir, "config.json"), `{\n  "hidden_size": 64,\n  "token": "${SECRET}" ${SECRET}\n}`);
    const text = await message(readModelConfig(dir));
    expect(text).toMatch(/invalid JSON at line 3 column \d+ \(byte \d+\)$/);
    expect(text).not.toContain("hunter2");
  });

  it("never quote a secret from adapter_config.json, tokenizer.json or a safetensors header", async () => {
    const adapter = await fresh();
    await writeFile(path.join(adapter, "adapter_config.json"), `{"r": 8, "x": ${SECRET}}`);
    expect(await message(readPeftAdapter(adapter))).not.toContain("hunter2");

    const model = await fresh();
    await writeTinyModel(model);
    await writeFile(path.join(model, "tokenizer.json"), SECRET);
    expect(await message(loadTokenizer(model))).not.toContain("hunter2");

    const weights = await fresh();
    const header = Buffer.from(`{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, ${SECRET}}`);
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(header.length));
    await writeFile(path.join(weights, "model.safetensors"), Buffer.concat([prefix, header, Buffer.alloc(4)]));
    const text = await message(listTensors(weights));
    expect(text).toMatch(/header is not valid JSON .*at line 1 column \d+ \(byte \d+\)/);
    expect(text).not.toContain("hunter2");
  });

  it("do not pass on a template parser's message, which quotes the template", async () => {
    const dir = await fresh();
    await writeTinyModel(dir);
    await writeFile(path.join(dir, "tokenizer_config.json"), JSON.stringify({ eos_token: "<|im_end|>" }));
    await writeFile(path.join(dir, "chat_template.jinja"), `{% ${SECRET.replace(/[^a-z0-9]/gi, "_")} %}`);
    const tokenizer = await loadTokenizer(dir);
    let err: unknown;
    try {
      tokenizer.renderChat([{ role: "user", content: "hi" }]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ModelFormatError);
    expect((err as Error).message).toBe(`${path.join(dir, "chat_template.jinja")}: chat template does not parse (SyntaxError: Unknown statement type)`);
  });

  it("do not quote a secret that sits in a field of the wrong type", async () => {
    const dir = await fresh();
    await writeTinyModel(dir);
    const long = `${SECRET}-${"x".repeat(100)}`;
    await writeFile(path.join(dir, "config.json"), JSON.stringify({ architectures: [long], hidden_size: long }));
    expect(await message(readModelConfig(dir))).not.toContain("hunter2");
    await writeFile(path.join(dir, "config.json"), JSON.stringify({ model_type: long }));
    expect(await message(readModelConfig(dir))).not.toContain("hunter2");
  });
});
