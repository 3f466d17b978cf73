#!/usr/bin/env node
/**
 * bench/merge: merging a LoRA adapter into its base model with the engine's native kernel
 * (mergeLoraFolder) against @lathe/models' JS mergeAdapter, on the same folders. Both write the
 * same bytes (checked here too). Times are whole merges (reading, merging, writing); a third run
 * with a kernel that does nothing measures the folder I/O, and the difference is the arithmetic.
 *
 *   node bench/dist/merge/main.js -- [--hidden 1024] [--layers 4] [--vocab 8192] [--r 16] [--threads 0] [--dtype F32|BF16]
 */
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { mergeLoraFolder } from "@lathe/engine";
import { mergeAdapter, writeTinyAdapter, writeTinyModel } from "@lathe/models";

const { values } = parseArgs({
  options: {
    hidden: { type: "string", default: "1024" },
    layers: { type: "string", default: "4" },
    vocab: { type: "string", default: "8192" },
    r: { type: "string", default: "16" },
    threads: { type: "string", default: "0" },
    dtype: { type: "string", default: "F32" },
  },
});
const [hidden, layers, vocab, r, threads] = [values.hidden, values.layers, values.vocab, values.r, values.threads].map(Number) as [number, number, number, number, number];
const dtype = values.dtype === "BF16" ? "BF16" : "F32";

const root = await mkdtemp(join(tmpdir(), "lathe-bench-merge-"));
try {
  const base = join(root, "base");
  const adapter = join(root, "adapter");
  await writeTinyModel(base, { hidden, layers, heads: hidden / 64, kvHeads: Math.max(1, hidden / 256), intermediate: Math.round((hidden * 8) / 3 / 64) * 64, vocab, seed: 1, dtype });
  const targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"];
  await writeTinyAdapter(adapter, base, { r, alpha: 2 * r, targetModules: targets, seed: 1 });
  console.log(`model: hidden ${hidden}, ${layers} layers, vocab ${vocab}, ${dtype}; LoRA r=${r} on ${targets.join(",")}; engine threads ${threads === 0 ? "all" : threads}`);

  const time = async (what: string, run: (out: string) => Promise<void>): Promise<[number, string]> => {
    const out = join(root, what);
    const start = process.hrtime.bigint();
    await run(out);
    return [Number(process.hrtime.bigint() - start) / 1e9, out];
  };
  const [js, jsOut] = await time("js", (out) => mergeAdapter(base, adapter, out));
  const [engine, engineOut] = await time("engine", (out) => mergeLoraFolder({ baseDir: base, adapterDir: adapter, outDir: out, numThreads: threads }));
  const [io] = await time("io", (out) => mergeAdapter(base, adapter, out, { kernel: () => undefined }));
  let same = true;
  for (const file of await readdir(jsOut)) same &&= (await readFile(join(jsOut, file))).equals(await readFile(join(engineOut, file)));
  const arithmetic = (t: number): string => `${Math.max(t - io, 0).toFixed(3).padStart(7)} s`;
  console.log(`                          whole merge   arithmetic (whole − I/O only)`);
  console.log(`mergeAdapter (JS)        ${js.toFixed(3).padStart(8)} s   ${arithmetic(js)}`);
  console.log(`mergeLoraFolder (engine) ${engine.toFixed(3).padStart(8)} s   ${arithmetic(engine)}`);
  console.log(`I/O only (no-op kernel)  ${io.toFixed(3).padStart(8)} s`);
  console.log(`engine: ${(js / engine).toFixed(1)}x the JS merge's speed overall, ${((js - io) / Math.max(engine - io, 1e-3)).toFixed(1)}x in the arithmetic; same bytes: ${same}`);
} finally {
  await rm(root, { recursive: true, force: true });
}
