#!/usr/bin/env node
/**
 * bench/grpc: unary throughput of RegistryService.GetModel over loopback.
 *
 * Three servers, each in its own process, driven by the same client (this process) with the same
 * concurrency: a bare @grpc/grpc-js server (the peer), the kit's GrpcServer with the same trivial
 * handler (so kit/bare is the kit's own overhead: auth, tracing, error mapping), and the real
 * registry (kit + Postgres read; embedded PGlite unless LATHE_PG_URL is set).
 *
 *   npm run bench:grpc -- [--calls 20000] [--concurrency 64] [--rounds 3]
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeTinyModel } from "@lathe/models";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { credentials, Metadata } from "@grpc/grpc-js";
import { call, uploadFolder } from "@lathe/kit";
import { Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { benchKeyValue } from "./key.js";

const { values } = parseArgs({ options: { calls: { type: "string", default: "20000" }, concurrency: { type: "string", default: "64" }, rounds: { type: "string", default: "3" } } });
const calls = Number(values.calls);
const concurrency = Number(values.concurrency);
const rounds = Number(values.rounds);

async function startServer(kind: string): Promise<{ child: ChildProcess; address: string }> {
  const child = spawn(process.execPath, [fileURLToPath(new URL("./server.js", import.meta.url)), kind], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /port (\d+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on("exit", (code) => reject(new Error(`${kind} server exited with ${code}`)));
  });
  return { child, address: `127.0.0.1:${port}` };
}

/** Calls per second of `calls` GetModel calls with `concurrency` in flight. */
async function measure(client: RegistryServiceClient, name: string, n: number): Promise<number> {
  let next = 0;
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++;
        await call(client, "getModel", { name }, metadata);
      }
    }),
  );
  return n / (Number(process.hrtime.bigint() - start) / 1e9);
}

const metadata = new Metadata();
metadata.set("authorization", `Bearer ${benchKeyValue}`);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const results: Record<string, number> = {};
for (const kind of ["bare", "kit", "registry"]) {
  const { child, address } = await startServer(kind);
  // A plain generated client (no interceptors, no retry buffering), so the client costs as
  // little as it can and the servers are what is measured.
  const client = new RegistryServiceClient(address, credentials.createInsecure());
  try {
    const name = "models/bench";
    if (kind === "registry") {
      const dir = join(mkdtempSync(join(tmpdir(), "lathe-bench-model-")), "tiny");
      await writeTinyModel(dir);
      await uploadFolder((cb) => client.uploadModel(metadata, cb), { modelId: "bench", model: Model.fromPartial({ sourceUri: dir }), requestId: "bench" }, dir);
    }
    await measure(client, name, Math.min(2000, calls)); // warm-up: JIT, connections, caches
    const rates: number[] = [];
    for (let r = 0; r < rounds; r++) rates.push(await measure(client, name, calls));
    results[kind] = median(rates);
    console.log(`${kind.padEnd(9)} ${results[kind]!.toFixed(0).padStart(7)} calls/s  (median of ${rounds} rounds of ${calls}, ${concurrency} in flight; rounds: ${rates.map((x) => x.toFixed(0)).join(", ")})`);
  } finally {
    client.close();
    child.kill("SIGTERM");
  }
}
console.log(`kit/bare       ${(results["kit"]! / results["bare"]!).toFixed(2)}  (the kit's overhead on a trivial handler; target >= 0.8)`);
console.log(`registry/bare  ${(results["registry"]! / results["bare"]!).toFixed(2)}  (GetModel with its Postgres read, against a bare server that reads nothing)`);
