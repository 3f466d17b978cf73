#!/usr/bin/env node
/**
 * bench/gateway: the gateway's OpenAI-compatible HTTP API against node-llama-cpp called directly,
 * on the same GGUF (the base exported as the gateway exports it, F16), the same prompt tokens,
 * sampling (temperature 0), thread count, context size and one sequence per context, in one run.
 * The two sides take turns request by request, never overlapping, and each gateway run is
 * compared with its direct neighbour, so drift of the machine hits both alike. Prints:
 *
 *  - decode tokens/s (first to last token) and end-to-end tokens/s: gateway/direct (goal ≥ 0.95);
 *  - time to first token: from the HTTP request to the first SSE chunk with content, against
 *    from `evaluate` to the first token; the difference (goal < 5 ms), split at the response's
 *    head (sent once the request holds a sequence), with the request path's parts timed apart;
 *  - the cost of switching adapters: with LATHE_GATEWAY_MAX_CONTEXTS=1, TTFT of requests to the
 *    other of two adapters than the request before (each makes a context with the other LoRA)
 *    against requests repeating the one before, in turns; then the same with 2 contexts (no
 *    context made after warm-up), and directly (the context disposed and one made with the LoRA).
 *
 * Threads: the count at which the direct side decodes fastest (tried from 1 to the cores), used
 * by both sides; --threads sets it. The platform (registry and gateway, as `lathe up` runs them)
 * is embedded: PGlite and the in-process bus, no server needed; `--postgres` puts it on a fresh
 * database of the Postgres at LATHE_TEST_PG_URL instead. The HTTP client (node:http) runs in a
 * child process, as a remote client would cost the gateway's process nothing; `--client inline`
 * runs it in this process, `--client fetch` with fetch here (its web streams cost more per chunk,
 * and in this process that cost falls between the gateway's tokens). The tiny tokenizer has at
 * most 564 tokens: a larger --vocab generates ids without text.
 *
 *   npm run bench:gateway -- [--hidden 768] [--layers 8] [--vocab 512] [--threads 0] [--context 1024] [--max-tokens 128]
 *                            [--runs 10] [--switch-tokens 8] [--switch-runs 20] [--r 16] [--postgres] [--client child|inline|fetch]
 */
import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { availableParallelism, cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Metadata } from "@grpc/grpc-js";
import { call, createClient } from "@lathe/kit";
import { exportGguf, exportGgufLora, loadTokenizer, writeTinyAdapter, writeTinyModel, type ChatTurn } from "@lathe/models";
import { RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { getLlama, LlamaLogLevel, type LlamaContext } from "node-llama-cpp";
import { fastestThreads, generateDirect } from "./direct.js";
import { startBenchPlatform, type BenchPlatform } from "./platform.js";
import { decodeRate, endToEndRate, median, timeEach } from "./stats.js";
import { benchClient, type ClientMode } from "./child-client.js";
import type { GenerationTiming, StreamedChat } from "./stream-chat.js";

const { values } = parseArgs({
  options: {
    hidden: { type: "string", default: "768" },
    layers: { type: "string", default: "8" },
    vocab: { type: "string", default: "512" },
    threads: { type: "string", default: "0" },
    context: { type: "string", default: "1024" },
    "max-tokens": { type: "string", default: "128" },
    runs: { type: "string", default: "10" },
    "switch-tokens": { type: "string", default: "8" },
    "switch-runs": { type: "string", default: "20" },
    r: { type: "string", default: "16" },
    postgres: { type: "boolean", default: false },
    client: { type: "string", default: "child" },
  },
});
const num = (k: Exclude<keyof typeof values, "postgres" | "client">): number => Number(values[k]);
if (!["child", "inline", "fetch"].includes(values.client)) throw new Error(`--client must be child, inline or fetch, not ${values.client}`);
const clientMode = values.client as ClientMode;
const CLIENTS: Record<ClientMode, string> = { child: "node:http in a child process", inline: "node:http in this process", fetch: "fetch in this process" };
const [hidden, layers, vocab, contextSize, maxTokens, runs, switchTokens, switchRuns, r] = [
  num("hidden"),
  num("layers"),
  num("vocab"),
  num("context"),
  num("max-tokens"),
  num("runs"),
  num("switch-tokens"),
  num("switch-runs"),
  num("r"),
];
const heads = hidden / 64;
const kvHeads = Math.max(1, hidden / 256);
const intermediate = Math.round((hidden * 8) / 3 / 64) * 64;
const TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
const ADAPTERS = [
  { id: "alpha", seed: 3 },
  { id: "beta", seed: 11 },
] as const;
const QUESTION = "My router keeps restarting. What should I do?";
const MODEL_TYPE = "F16";
const cores = availableParallelism();

const fmt = (x: number, digits = 1, width = 9): string => x.toFixed(digits).padStart(width);
const signed = (x: number): string => `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(1)} ms`;
const ok = (pass: boolean): string => (pass ? "met" : "MISSED");
const loaded = (): string => (loadavg()[0]! > cores / 2 ? `! load average ${loadavg()[0]!.toFixed(1)} on ${cores} cores: other processes share the CPUs, so times are noisy\n` : "");

const root = await mkdtemp(join(tmpdir(), "lathe-bench-gateway-"));
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const client = benchClient(clientMode);
try {
  // The base (imported by the registry from its folder) and two adapters of it.
  const modelDir = join(root, "import", "base");
  await writeTinyModel(modelDir, { hidden, layers, heads, kvHeads, intermediate, vocab, seed: 1, dtype: MODEL_TYPE });
  const adapters = ADAPTERS.map((a) => ({ id: a.id, dir: join(root, "adapters", a.id) }));
  for (const [i, a] of ADAPTERS.entries()) await writeTinyAdapter(adapters[i]!.dir, modelDir, { r, alpha: 2 * r, targetModules: TARGETS, seed: a.seed });
  // What the direct side loads: the GGUF exports the gateway makes, made here the same way.
  await mkdir(join(root, "direct"));
  const gguf = join(root, "direct", "base.gguf");
  await exportGguf(modelDir, gguf, { dtype: MODEL_TYPE });
  const loras = new Map<string, string>();
  for (const a of adapters) {
    loras.set(a.id, join(root, "direct", `${a.id}.gguf`));
    await exportGgufLora(a.dir, modelDir, loras.get(a.id)!, { dtype: MODEL_TYPE });
  }
  // The prompt as the gateway renders a chat: the template with the assistant's generation prompt.
  const tok = await loadTokenizer(modelDir);
  const render = (): number[] => {
    const turns: ChatTurn[] = [{ role: "user", content: QUESTION }, { role: "assistant", content: "" }];
    const rendered = tok.chatAnswerSpans(turns);
    return tok.encode(rendered.text.slice(0, rendered.spans.at(-1)!.start));
  };
  const prompt = render();
  const decode = (tokens: number[]): string => tok.decode(tokens);
  const model = await llama.loadModel({ modelPath: gguf });

  let threads = num("threads");
  let threadsNote = "given";
  if (threads === 0) {
    const { best, rates } = await fastestThreads(model, prompt, cores, contextSize, decode);
    threads = best;
    threadsNote = `the fastest directly: ${[...rates].map(([t, rate]) => `${t} → ${rate.toFixed(0)} tokens/s`).join(", ")}`;
  }

  const params = vocab * hidden * 2 + layers * (hidden * (heads * 64) * 2 + hidden * (kvHeads * 64) * 2 + 3 * hidden * intermediate) + (2 * layers + 1) * hidden;
  console.log(`machine: ${cores} cores (${cpus()[0]?.model.trim() ?? "unknown CPU"}), Node ${process.version}, node-llama-cpp 3.21.1 (CPU)`);
  console.log(
    `model: llama, hidden ${hidden}, ${layers} layers, ${heads} heads (${kvHeads} KV), intermediate ${intermediate}, vocab ${vocab}; ` +
      `${(params / 1e6).toFixed(1)}M parameters, GGUF ${MODEL_TYPE} ${((await stat(gguf)).size / 2 ** 20).toFixed(0)} MiB; adapters: LoRA r=${r} on ${TARGETS.map((t) => t.replace("_proj", "")).join(",")}`,
  );
  // What the gateway's default (LATHE_GATEWAY_THREADS=0: node-llama-cpp's choice) would use here.
  const defaultContext = await model.createContext({ contextSize, sequences: 1 });
  const defaultThreads = defaultContext.idealThreads;
  await defaultContext.dispose();
  console.log(`threads: ${threads} llama.cpp threads both sides (${threadsNote}); node-llama-cpp's own default would be ${defaultThreads} (the gateway's LATHE_GATEWAY_THREADS=0 takes the cores instead)`);
  console.log(
    `settings: context ${contextSize}, 1 sequence per context, temperature 0; prompt ${prompt.length} tokens (chat), max_tokens ${maxTokens}; ` +
      `${runs} runs each side after a warm-up, taking turns`,
  );
  console.log(`platform: registry + gateway in this process, ${values.postgres ? "Postgres at LATHE_TEST_PG_URL (a fresh database)" : "embedded (PGlite, in-process bus)"}; the HTTP client: ${CLIENTS[clientMode]}`);
  process.stdout.write(loaded());
  console.log();

  let platforms = 0;
  const platform = (maxContexts: number): Promise<BenchPlatform> =>
    startBenchPlatform({
      dataDir: join(root, `data-${++platforms}`),
      importRoot: join(root, "import"),
      postgres: values.postgres,
      gateway: { LATHE_GATEWAY_THREADS: threads, LATHE_GATEWAY_CONTEXT_SIZE: contextSize, LATHE_GATEWAY_SEQUENCES: 1, LATHE_GATEWAY_GGUF_TYPE: MODEL_TYPE, LATHE_GATEWAY_MAX_CONTEXTS: maxContexts },
      modelDir,
      adapters,
    });
  const chat = (p: BenchPlatform, name: string, tokens: number) => client.stream(p.url, p.apiKey, { model: name, messages: [{ role: "user", content: QUESTION }], temperature: 0, max_tokens: tokens });
  const newContext = (lora: string | undefined): Promise<LlamaContext> =>
    model.createContext({ contextSize, sequences: 1, threads, ...(lora ? { lora: { adapters: [{ filePath: lora, scale: 1 }] } } : {}) });

  // 1. Generation and time to first token, base model, the two sides in turns.
  const p = await platform(4);
  try {
    const context = await newContext(undefined);
    const viaGateway = () => chat(p, "bench", maxTokens);
    const directly = () => generateDirect(model, context, prompt, maxTokens, decode);
    await viaGateway();
    await directly();
    const g: StreamedChat[] = [];
    const d: GenerationTiming[] = [];
    // CPU time of this process per request, all threads: both sides compute the same tokens, so the
    // difference is the gateway's own work (and the client's, which in a deployment runs elsewhere).
    const busy = { gateway: [] as number[], direct: [] as number[] };
    const timed = async <T>(side: keyof typeof busy, f: () => Promise<T>): Promise<T> => {
      const before = process.cpuUsage();
      const out = await f();
      const used = process.cpuUsage(before);
      busy[side].push((used.user + used.system) / 1000);
      return out;
    };
    for (let i = 0; i < runs; i++) {
      if (i % 2 === 0) {
        g.push(await timed("gateway", viaGateway));
        d.push(await timed("direct", directly));
      } else {
        d.push(await timed("direct", directly));
        g.push(await timed("gateway", viaGateway));
      }
    }
    await context.dispose();
    const same = g.every((x) => x.text === d[0]!.text && x.tokens === d[0]!.tokens) && d.every((x) => x.text === d[0]!.text);
    if (g[0]!.promptTokens !== prompt.length) console.log(`! the gateway's prompt has ${g[0]!.promptTokens} tokens, the direct one ${prompt.length}`);
    if (d[0]!.tokens < maxTokens) console.log(`! generation ended after ${d[0]!.tokens} tokens (end of generation), not ${maxTokens}`);

    // Ratios and differences are taken per pair of neighbouring runs, so that a burst of load
    // from elsewhere hits both terms of one.
    const pairs = g.map((x, i) => [x, d[i]!] as const);
    const ratio = (f: (t: GenerationTiming) => number): number => median(pairs.map(([a, b]) => f(a) / f(b)));
    const diff = (f: (t: GenerationTiming) => number, h: (t: GenerationTiming) => number = f): number => median(pairs.map(([a, b]) => f(a) - h(b)));
    const ttft = (t: GenerationTiming): number => t.firstMs;
    const afterHead = (t: GenerationTiming): number => t.firstMs - (t as StreamedChat).headMs;
    const total = (t: GenerationTiming): number => t.totalMs;
    const row = (label: string, gv: number, dv: number | undefined, vs: string, goal = ""): void =>
      console.log(`${label.padEnd(32)} ${fmt(gv)}  ${dv === undefined ? "".padStart(9) : fmt(dv)}   ${vs.padEnd(16)}  ${goal}`);
    const decodeRatio = ratio(decodeRate);
    const addedTtft = diff(ttft);
    const gHead = median(g.map((x) => x.headMs));
    console.log(`median of ${runs} runs                     gateway     direct   gateway vs direct  goal`);
    row("decode tokens/s (1st to last)", median(g.map(decodeRate)), median(d.map(decodeRate)), `ratio ${decodeRatio.toFixed(3)}`, `≥ 0.95 ${ok(decodeRatio >= 0.95)}`);
    row("end-to-end tokens/s", median(g.map(endToEndRate)), median(d.map(endToEndRate)), `ratio ${ratio(endToEndRate).toFixed(3)}`);
    row("time to first token (ms)", median(g.map(ttft)), median(d.map(ttft)), signed(addedTtft), `< 5 ms ${ok(addedTtft < 5)}`);
    row("  request to response head", gHead, undefined, "", "(the gateway's work before it evaluates)");
    row("  head to first content", median(g.map(afterHead)), median(d.map(ttft)), signed(diff(afterHead, ttft)));
    row("whole request (ms)", median(g.map(total)), median(d.map(total)), signed(diff(total)));
    row("CPU time, all threads (ms)", median(busy.gateway), median(busy.direct), signed(median(busy.gateway.map((x, i) => x - busy.direct[i]!))), clientMode === "child" ? "(this process: the gateway's side without its client)" : "(this process: the gateway's side with its client)");
    console.log(`(the third column: median over the ${runs} pairs of neighbouring runs)`);
    console.log(
      `same answer both sides: ${same ? "yes" : "NO"} (${g[0]!.tokens} tokens, finish ${g[0]!.finishReason}); ` +
        `fastest TTFT gateway ${Math.min(...g.map(ttft)).toFixed(1)} ms (head ${Math.min(...g.map((x) => x.headMs)).toFixed(1)} ms), direct ${Math.min(...d.map(ttft)).toFixed(1)} ms`,
    );

    // Where the gateway's time before the response's head goes: parts of its request path, timed apart.
    const n = 20;
    // Timed where the client runs (in its process, when it has one).
    const refuse = async (body: Record<string, unknown>, code: string): Promise<number> => {
      const ms = [];
      for (let i = 0; i < n; i++) {
        const res = await client.post(`${p.url}/v1/chat/completions`, p.apiKey, body);
        if (res.status !== 400 || !res.text.includes(code)) throw new Error(`expected a 400 ${code}, got ${res.status} ${res.text}`);
        ms.push(res.ms);
      }
      return median(ms);
    };
    // Through HTTP, the key check, the rate limit, parsing and the metrics, refused before any lookup.
    const refusedEarly = await refuse({ model: "bench", messages: [] }, "messages");
    // The whole request path up to generation (lookups, template, prompt), refused just before it: more tokens asked than the context holds.
    const refusedLate = await refuse({ model: "bench", messages: [{ role: "user", content: QUESTION }], max_tokens: contextSize * 2 }, "context_length_exceeded");
    // The gateway looks for a deployment serving the name first (its table, as of this writing).
    const deploymentLookup = await timeEach(n, () =>
      p.db.withSchema("gateway").selectFrom("deployments").selectAll().where("tenant", "=", p.tenant).where("served_model_name", "=", "bench").executeTakeFirst(),
    ).catch(() => NaN);
    const md = new Metadata();
    md.set("authorization", `Bearer ${p.apiKey}`);
    const freshLookup = await timeEach(n, async () => {
      // As the gateway's registry lookup does per request: a new client, GetModel, close.
      const c = createClient(RegistryServiceClient, p.address, { deadlineMs: 30_000 });
      try {
        await call(c, "getModel", { name: "models/bench" }, md);
      } finally {
        c.close();
      }
    });
    const kept = createClient(RegistryServiceClient, p.address, { deadlineMs: 30_000 });
    await call(kept, "getModel", { name: "models/bench" }, md);
    const keptLookup = await timeEach(n, () => call(kept, "getModel", { name: "models/bench" }, md));
    const adapterLookup = await timeEach(n, async () => {
      await call(kept, "getModel", { name: "models/bench" }, md);
      const { adapter } = await call(kept, "getAdapter", { name: "models/bench/adapters/alpha" }, md);
      await call(kept, "getAdapterVersion", { name: adapter!.latestVersion }, md);
    });
    kept.close();
    const rendering = await timeEach(n, async () => render());
    console.log(`\nthe gateway's request path (${gHead.toFixed(1)} ms to the head), parts of it timed apart (medians of ${n}):`);
    const part = (label: string, ms: number) => console.log(`  ${label.padEnd(80)} ${Number.isNaN(ms) ? "    n/a" : fmt(ms, 2, 7)} ms`);
    part("a chat refused just before generation (max_tokens beyond the context)", refusedLate);
    part("  of which: a chat refused before any lookup (HTTP, key, rate limit, parsing)", refusedEarly);
    part("  of which: deployment lookup, one query of the gateway's table", deploymentLookup);
    part("  of which: registry lookup (GetModel over a kept client, as the gateway does)", keptLookup);
    part("  of which: chat prompt rendered with the template and tokenized", rendering);
    part("  of which: the rest", refusedLate - refusedEarly - (Number.isNaN(deploymentLookup) ? 0 : deploymentLookup) - keptLookup - rendering);
    part("for comparison: the same GetModel over a new client each time", freshLookup);
    part("for comparison: an adapter's lookup (3 calls) over a kept client", adapterLookup);
  } finally {
    await p.stop();
  }

  // 2. Adapter switching. Requests in pairs, beta beta alpha alpha …: the first of a pair switches
  // adapter, the second repeats it; the switch cost is the median over pairs of their difference.
  const pattern = Array.from({ length: switchRuns }, (_, i) => (i % 2 === 0 ? "beta" : "alpha"));
  const rows: { label: string; repeat: number[]; switched: number[]; made: string }[] = [];
  {
    // Directly: the old context disposed and one made with the other LoRA.
    for (const id of ["beta", "alpha"]) await (await newContext(loras.get(id))).dispose();
    let current = await newContext(loras.get("alpha"));
    await generateDirect(model, current, prompt, switchTokens, decode);
    const row = { label: "direct: dispose + new context", repeat: [] as number[], switched: [] as number[], made: String(switchRuns) };
    for (const id of pattern) {
      const before = current;
      const run = await generateDirect(model, async () => (await before.dispose(), newContext(loras.get(id))), prompt, switchTokens, decode);
      current = run.context;
      row.switched.push(run.firstMs);
      row.repeat.push((await generateDirect(model, current, prompt, switchTokens, decode)).firstMs);
    }
    await current.dispose();
    rows.push(row);
  }
  for (const maxContexts of [1, 2]) {
    const s = await platform(maxContexts);
    try {
      const ask = async (id: string) => (await chat(s, `bench:${id}`, switchTokens)).firstMs;
      // Warm-up: each adapter's GGUF made and loaded; alpha's context is the one kept with 1.
      for (const id of ["beta", "alpha", "beta", "alpha"]) await ask(id);
      const before = s.contextsMade();
      const row = { label: `gateway, MAX_CONTEXTS=${maxContexts}`, repeat: [] as number[], switched: [] as number[], made: "" };
      for (const id of pattern) {
        row.switched.push(await ask(id));
        row.repeat.push(await ask(id));
      }
      row.made = String(s.contextsMade() - before);
      rows.push(row);
    } finally {
      await s.stop();
    }
  }
  console.log(`\nadapter switching: TTFT (ms), ${switchRuns} pairs of requests of ${switchTokens} tokens: one to the other adapter than the request before, then one repeating it`);
  console.log("median                           repeat adapter   switch adapter   switch cost (per pair)   contexts made");
  for (const row of rows) {
    const cost = median(row.switched.map((x, i) => x - row.repeat[i]!));
    console.log(`${row.label.padEnd(31)}  ${fmt(median(row.repeat), 1, 14)}   ${fmt(median(row.switched), 1, 14)}   ${signed(cost).padStart(22)}   ${row.made.padStart(13)}`);
  }
  process.stdout.write(loaded());
  await model.dispose();
} finally {
  await client.close();
  await llama.dispose();
  await rm(root, { recursive: true, force: true });
}
