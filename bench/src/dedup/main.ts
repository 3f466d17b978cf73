#!/usr/bin/env node
/**
 * bench/dedup: MinHash + LSH near-duplicate detection throughput, and PII scanning throughput.
 *
 * On `--docs` generated documents of about 100 words (10% near-duplicate copies), with 128
 * permutations and threshold 0.8, one thread: documents per second for signatures, index inserts
 * and queries (LSH candidates verified by estimated Jaccard), all three together, and the
 * end-to-end nearDuplicateClusters (which also runs union-find). Target: ≥ 50k documents/s.
 *
 * Peer: the npm package `minhash` (MinHash signatures of the same 3-word shingles, 128
 * permutations) on the first `--peer-docs` documents, printed as the ratio ours/peer. Its API
 * makes one Minhash per document, which draws its own permutations; that cost is counted, as a user
 * of it pays it. It is skipped, saying so, when the package is not installed.
 *
 * PII: scanPii from @lathe/text over the documents with PII planted in 5% of them, in MB/s of
 * UTF-8 text.
 *
 *   npm run bench:dedup -- [--docs 100000] [--rounds 3] [--peer-docs 2000]
 */
import { parseArgs } from "node:util";
import * as text from "@lathe/text";
import { LshIndex, MinHasher, nearDuplicateClusters, normalizeText } from "@lathe/text";
import { generateDocs, plantPii } from "./corpus.js";

const { values } = parseArgs({ options: { docs: { type: "string", default: "100000" }, rounds: { type: "string", default: "3" }, "peer-docs": { type: "string", default: "2000" } } });
const numDocs = Number(values.docs);
const rounds = Number(values.rounds);
const peerDocs = Number(values["peer-docs"]);
const numPerm = 128;
const threshold = 0.8;

const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rate = (n: number, s: number) => Math.round(n / s).toLocaleString("en-US");

interface Phases {
  signatures: number;
  inserts: number;
  queries: number;
  candidates: number;
  matches: number;
}

/** Seconds of each phase over all docs: signatures into one flat buffer, LSH inserts, LSH queries with verification. */
function dedupPhases(docs: readonly string[]): Phases {
  const hasher = new MinHasher({ numPerm });
  const flat = new Uint32Array(docs.length * numPerm);
  let start = process.hrtime.bigint();
  for (let i = 0; i < docs.length; i++) hasher.signatureInto(docs[i]!, flat, i * numPerm);
  const signatures = seconds(start);

  const sigs = Array.from({ length: docs.length }, (_, i) => flat.subarray(i * numPerm, (i + 1) * numPerm));
  const index = new LshIndex({ numPerm, threshold });
  start = process.hrtime.bigint();
  for (let i = 0; i < docs.length; i++) index.insert(i, sigs[i]!);
  const inserts = seconds(start);

  const need = Math.ceil(threshold * numPerm - 1e-9);
  let candidates = 0;
  let matches = 0;
  start = process.hrtime.bigint();
  for (let i = 0; i < docs.length; i++) {
    const sig = sigs[i]!;
    for (const c of index.query(sig)) {
      if (c === i) continue;
      candidates++;
      const other = sigs[c]!;
      let same = 0;
      for (let p = 0; p < numPerm; p++) if (sig[p] === other[p]) same++;
      if (same >= need) matches++;
    }
  }
  const queries = seconds(start);
  return { signatures, inserts, queries, candidates, matches };
}

/** The peer's Minhash class, as much of it as the benchmark uses. */
interface PeerMinhash {
  update(s: string): void;
  hashvalues?: number[];
  hashValues?: number[];
}
type PeerMinhashClass = new (config?: { numPerm?: number }) => PeerMinhash;

async function loadPeer(): Promise<PeerMinhashClass | string> {
  const name = "minhash"; // a variable, so that the build does not need the package
  let mod: Record<string, unknown>;
  try {
    mod = (await import(name)) as Record<string, unknown>;
  } catch {
    return "not installed";
  }
  const def = mod.default as Record<string, unknown> | (() => void) | undefined;
  const candidate = mod.Minhash ?? (def && typeof def === "object" ? (def.Minhash ?? def.MinHash) : def);
  return typeof candidate === "function" ? (candidate as PeerMinhashClass) : "no Minhash class in the module";
}

/** Seconds the peer takes to sign `docs` (normalising and building the shingle strings included). */
function peerSeconds(Peer: PeerMinhashClass, docs: readonly string[]): number {
  const start = process.hrtime.bigint();
  for (const doc of docs) {
    const m = new Peer({ numPerm });
    const words = normalizeText(doc).split(" ");
    for (let i = 0; i + 3 <= words.length; i++) m.update(`${words[i]} ${words[i + 1]} ${words[i + 2]}`);
    const values = m.hashvalues ?? m.hashValues ?? [];
    if (values.length !== numPerm) throw new Error(`peer signature has ${values.length} values, expected ${numPerm}`);
  }
  return seconds(start);
}

type ScanPii = (s: string) => Array<{ kind: string; start: number; end: number }>;

console.log(`generating ${numDocs.toLocaleString("en-US")} documents…`);
const docs = generateDocs(numDocs);
const words = docs.reduce((n, d) => n + d.split(" ").length, 0);
console.log(`${(words / docs.length).toFixed(1)} words per document; numPerm ${numPerm}, threshold ${threshold}, LSH ${new LshIndex({ numPerm, threshold }).bands} bands × ${new LshIndex({ numPerm, threshold }).rows} rows`);

const runs: Phases[] = [];
const endToEnd: number[] = [];
for (let r = 0; r < rounds; r++) {
  const p = dedupPhases(docs);
  runs.push(p);
  const start = process.hrtime.bigint();
  const { clusters } = nearDuplicateClusters(docs, { numPerm, threshold });
  endToEnd.push(seconds(start));
  const total = p.signatures + p.inserts + p.queries;
  console.log(
    `round ${r + 1}: signatures ${rate(numDocs, p.signatures)}/s, inserts ${rate(numDocs, p.inserts)}/s, queries ${rate(numDocs, p.queries)}/s, ` +
      `all three ${rate(numDocs, total)}/s, nearDuplicateClusters ${rate(numDocs, endToEnd[r]!)}/s ` +
      `(${p.candidates} candidates, ${p.matches} verified, ${clusters.length} clusters)`,
  );
}
const sig = median(runs.map((p) => p.signatures));
const ins = median(runs.map((p) => p.inserts));
const qry = median(runs.map((p) => p.queries));
const all = median(runs.map((p) => p.signatures + p.inserts + p.queries));
console.log(`\ndedup, docs/s (median of ${rounds}, one thread):`);
console.log(`  signatures           ${rate(numDocs, sig)}`);
console.log(`  index inserts        ${rate(numDocs, ins)}`);
console.log(`  queries + verify     ${rate(numDocs, qry)}`);
console.log(`  all three            ${rate(numDocs, all)}   (target ≥ 50,000)`);
console.log(`  nearDuplicateClusters ${rate(numDocs, median(endToEnd))}`);

const Peer = await loadPeer();
if (typeof Peer === "string") {
  console.log(`\npeer minhash: skipped (${Peer})`);
} else {
  const subset = docs.slice(0, peerDocs);
  const hasher = new MinHasher({ numPerm });
  const ours: number[] = [];
  const theirs: number[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      theirs.push(peerSeconds(Peer, subset));
      const start = process.hrtime.bigint();
      for (const d of subset) hasher.signature(d);
      ours.push(seconds(start));
    }
    const o = median(ours);
    const t = median(theirs);
    console.log(`\nsignatures on ${subset.length} docs, docs/s: ours ${rate(subset.length, o)}, peer minhash ${rate(subset.length, t)}, ours/peer ${(t / o).toFixed(1)}×`);
  } catch (err) {
    console.log(`\npeer minhash: failed (${(err as Error).message})`);
  }
}

const scanPii = (text as unknown as { scanPii?: ScanPii }).scanPii;
if (typeof scanPii !== "function") {
  console.log("\nPII: skipped (@lathe/text does not export scanPii yet)");
} else {
  const piiDocs = plantPii(docs);
  const bytes = piiDocs.reduce((n, d) => n + Buffer.byteLength(d), 0);
  const times: number[] = [];
  let hits = 0;
  for (let r = 0; r < rounds; r++) {
    hits = 0;
    const start = process.hrtime.bigint();
    for (const d of piiDocs) hits += scanPii(d).length;
    times.push(seconds(start));
  }
  const s = median(times);
  console.log(`\nPII scan: ${(bytes / 1e6 / s).toFixed(1)} MB/s, ${rate(piiDocs.length, s)} docs/s (${(bytes / 1e6).toFixed(1)} MB, ${hits} hits)`);
}
