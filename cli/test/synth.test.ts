import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, startOpenAiUpstream, waitFor, type OpenAiUpstream } from "@lathe/testing";
import { plantedSecrets } from "../../libs/kit/test/planted-secrets.js";
import { cliPath, runCli, startUp } from "./cli-process.js";

const KEY = plantedSecrets["planted teacher API key"];
const PRICES = { teacher: { input: 2, output: 8 } };

const products = ["router", "laptop", "phone", "printer", "monitor", "camera", "tablet", "speaker", "headset", "scanner", "console", "projector", "smartwatch", "keyboard", "modem", "television"];
const symptoms = ["beeps twice", "flickers", "overheats", "freezes", "shuts down", "will not charge", "drops the network", "shows a blank screen", "makes a clicking noise"];
const whens = ["after every update", "since the storm last night", "when I travel", "after cleaning it", "in the mornings", "during video calls", "once it is warm"];
const steps = ["Unplug", "Restart", "Update the firmware of", "Reset", "Move", "Clean the vents of", "Check the cable of"];
const thens = ["wait thirty seconds", "hold the power button for ten seconds", "plug it into another outlet", "remove any case or cover", "sign out and in again", "turn off battery saver"];
const finals = ["send us its serial number", "book a repair online", "try the recovery mode from the manual", "reply with a photo of the label", "call the hotline from the box"];
const pick = (words: string[], n: number, every: number) => words[Math.floor(n / every) % words.length]!;

/** The teacher's n-th good example: different from every other in most of its words, so none is a near duplicate. */
const good = (n: number) => ({
  messages: [
    { role: "user", content: `Ticket ${1000 + n}: my ${pick(products, n, 1)} ${pick(symptoms, n, 1)} ${pick(whens, n, 2)}. What should I try first?` },
    { role: "assistant", content: `${pick(steps, n, 3)} the ${pick(products, n, 1)}, then ${pick(thens, n, 5)}. If it still ${pick(symptoms, n, 1)}, ${pick(finals, n, 7)} and we will take it from there.` },
  ],
});

/** Real examples: the seed set, and the two few-shot rows of the file, in another wording than the teacher's. */
const real = (i: number) => ({
  messages: [
    { role: "user", content: `Hello, the ${products[i % products.length]} I bought last month is broken (order ${500 + i}). Can you help me?` },
    { role: "assistant", content: `Sorry to hear that! Please hold its reset button for five seconds. If that does not help, we send you a new ${products[i % products.length]} for order ${500 + i}.` },
  ],
});
const jsonl = (rows: unknown[]) => `${rows.map((r) => JSON.stringify(r)).join("\n")}\n`;

interface ProgressJson {
  generatedCount?: number;
  acceptedCount?: number;
  reviewCount?: number;
  reviewPendingCount?: number;
  promptTokens?: number;
  completionTokens?: number;
  cost?: number;
  rejections?: { reason: string; count: number }[];
}
interface JobJson {
  name: string;
  state: string;
  targetCount: number;
  labels?: Record<string, string>;
  teacher: { baseUrl: string; model: string; apiKeySecret?: string; maxConcurrentRequests?: number };
  fewShotExamples?: { messages: { role: string; content: string }[] }[];
  seedDatasetVersion?: string;
  reviewSampleFraction?: number;
  progress: ProgressJson;
  publishedDatasetVersion?: string;
}
interface ItemJson {
  name: string;
  state: string;
  note?: string;
  example: { messages: { role: string; content: string }[] };
}

describe("lathe synth (against lathe up)", () => {
  let dataDir: string;
  let teacher: OpenAiUpstream;
  let up: Awaited<ReturnType<typeof startUp>>;
  let conn: string[];
  let shots: string;
  let teacherFlags: string[];

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "lathe-synth-"));
    shots = join(dataDir, "shots.jsonl");
    writeFileSync(shots, jsonl([real(100), real(101)]));
    // The teacher answers, by request: not JSON, a copy of a few-shot row, a copy of a seed row, then good examples.
    teacher = await startOpenAiUpstream({
      models: ["teacher"],
      apiKey: KEY,
      answer: (n: number) => (n === 0 ? "Sure! Here it is: {messages: [" : JSON.stringify(n === 1 ? real(100) : n === 2 ? real(3) : good(n))),
    });
    teacherFlags = ["--teacher-url", teacher.url, "--teacher-model", "teacher", "--teacher-key-env", "LATHE_TEST_TEACHER_KEY"];
    // The key is in the environment of lathe up, where the synthgen service runs; never on a command line.
    up = await startUp(["--data-dir", dataDir, "--port", String(await freePort())], {
      ...process.env,
      LATHE_TEST_TEACHER_KEY: KEY,
      LATHE_SYNTHGEN_PRICES: JSON.stringify(PRICES),
      LATHE_SYNTHGEN_POLL_MS: "100",
    });
    conn = ["--server", up.address, "--data-dir", dataDir];
    writeFileSync(join(dataDir, "support.jsonl"), jsonl(Array.from({ length: 8 }, (_, i) => real(i))));
    expect((await runCli(["datasets", "create", "support", join(dataDir, "support.jsonl"), ...conn])).code).toBe(0);
  }, 120_000);
  afterAll(async () => {
    if (up?.child.exitCode === null) up.child.kill("SIGKILL");
    await teacher?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const getJob = async (id: string) => {
    const r = await runCli(["synth", "get", id, "--json", ...conn]);
    expect(r.stderr).toBe("");
    return JSON.parse(r.stdout) as JobJson;
  };
  const listItems = async (id: string) => {
    const r = await runCli(["synth", "review", id, "--list", "--json", ...conn]);
    expect(r.stderr).toBe("");
    return (JSON.parse(r.stdout) as { reviewItems: ItemJson[] }).reviewItems;
  };
  const task = ["--task", "Answer home-electronics support tickets with one concrete step and a fallback."];

  it("create --watch prints a progress line per update (generated, accepted, rejected by reason, review pending, tokens, cost), then the job and what to do next", async () => {
    const r = await runCli(["synth", "create", ...task, "--examples", shots, "--examples", "support@v1", "--count", "6", ...teacherFlags, "--concurrency", "1", "--review-fraction", "0.5", "--id", "first", "--label", "team=support", "--watch", ...conn]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const [progress, summary] = r.stdout.split("\n\n");
    const lines = progress!.split("\n");
    expect(lines[0]).toBe("created generationJobs/first");
    for (const line of lines.slice(1)) expect(line).toMatch(/^(queued|running|succeeded): generated \d+, accepted \d+\/6, rejected \d+( \(.+\))?, review pending \d+, tokens [\d,]+, cost \d+\.\d{4} USD$/);
    expect(lines.at(-1)).toMatch(/^succeeded: generated \d+, accepted [6-9]\/6, rejected 3 \(duplicate_few_shot 1, duplicate_seed 1, malformed 1\), review pending [1-9]\d*, /);

    const job = await getJob("first");
    expect(job).toMatchObject({
      name: "generationJobs/first",
      state: "STATE_SUCCEEDED",
      targetCount: 6,
      labels: { team: "support" },
      // The key stays where it was: the job names the variable.
      teacher: { baseUrl: teacher.url, model: "teacher", apiKeySecret: "env:LATHE_TEST_TEACHER_KEY" },
      seedDatasetVersion: "datasets/support/versions/v1",
      reviewSampleFraction: 0.5,
    });
    expect(job.fewShotExamples).toEqual([real(100), real(101)].map((e) => ({ messages: e.messages.map((m) => ({ role: `CHAT_ROLE_${m.role.toUpperCase()}`, content: m.content })) })));
    const p = job.progress;
    expect(p.cost).toBeCloseTo(((p.promptTokens ?? 0) * PRICES.teacher.input + (p.completionTokens ?? 0) * PRICES.teacher.output) / 1e6, 12);
    const asked = teacher.requests.filter((q) => q.path === "/v1/chat/completions");
    expect(asked.length).toBeGreaterThan(0);
    expect(asked.every((q) => q.headers.authorization === `Bearer ${KEY}`)).toBe(true);
    expect(r.stdout).not.toContain(KEY);

    expect(summary).toMatch(/^name +generationJobs\/first\nstate +succeeded\nteacher +teacher at http:\/\/127\.0\.0\.1:\d+\/v1 \(key from env:LATHE_TEST_TEACHER_KEY\)\ntask +Answer home-electronics support tickets/);
    expect(summary).toContain("\nexamples   2 shown to the teacher\nseed set   support@v1 (duplicates dropped)\n");
    expect(summary).toContain(`\naccepted   ${p.acceptedCount} of 6\n`);
    expect(summary).toContain(`\nreview     ${p.reviewCount} sampled (50%): ${p.reviewPendingCount} pending, 0 approved, 0 rejected\n`);
    expect(summary).toContain(`\ncost       ${p.cost!.toFixed(4)} USD\n`);
    expect(summary).toContain(`\nreview the ${p.reviewPendingCount} sampled examples: lathe synth review first\nthen publish: lathe synth publish first --dataset NAME\n`);
    // get prints the same summary.
    const got = await runCli(["synth", "get", "generationJobs/first", ...conn]);
    expect(summary!.startsWith(got.stdout)).toBe(true);
  }, 120_000);

  it("list, then review without a terminal: --list, --reject with a note, --approve-all; publish refuses pending items, then makes the dataset and its version", async () => {
    const [listed, filtered, items] = await Promise.all([runCli(["synth", "list", ...conn]), runCli(["synth", "list", "--filter", 'labels.team = "support"', "--json", ...conn]), listItems("first")]);
    expect(listed.stdout).toMatch(/^NAME +STATE +TEACHER +ACCEPTED +REVIEW PENDING +PUBLISHED +CREATED\ngenerationJobs\/first +succeeded +teacher +\d\/6 +\d+ +\d{4}-/);
    expect((JSON.parse(filtered.stdout) as { generationJobs: JobJson[] }).generationJobs.map((j) => j.name)).toEqual(["generationJobs/first"]);

    const pending = await runCli(["synth", "publish", "first", "--dataset", "synthetic", ...conn]);
    expect(pending.code).toBe(1);
    expect(pending.stderr).toMatch(/^lathe: .+ \(FAILED_PRECONDITION, REVIEW_PENDING\)\n/);
    // The dataset made for that publish was removed again.
    expect((await runCli(["datasets", "list", ...conn])).stdout).not.toContain("datasets/synthetic");

    expect(items.length).toBeGreaterThan(0);
    expect(items.every((i) => i.state === "STATE_PENDING")).toBe(true);
    const table = await runCli(["synth", "review", "first", "--list", ...conn]);
    const rows = table.stdout.trimEnd().split("\n");
    expect(rows[0]).toMatch(/^ID +STATE +SIMILARITY +PROMPT +ANSWER +NOTE$/);
    expect(rows).toHaveLength(items.length + 1);
    const ids = items.map((i) => i.name.slice(i.name.lastIndexOf("/") + 1));
    for (const [k, i] of items.entries()) expect(rows[k + 1]).toMatch(new RegExp(`^${ids[k]} +pending +0\\.\\d\\d +${i.example.messages[0]!.content.slice(0, 20).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));

    const decided = await runCli(["synth", "review", "first", "--reject", ids[0]!, "--note", "too generic", "--approve-all", ...conn]);
    expect(decided.stderr).toBe("");
    expect(decided.stdout).toBe(`rejected generationJobs/first/reviewItems/${ids[0]}\napproved ${ids.length - 1} pending item${ids.length === 2 ? "" : "s"}\n`);
    const after = await listItems("first");
    expect(after.map((i) => i.state)).toEqual(["STATE_REJECTED", ...ids.slice(1).map(() => "STATE_APPROVED")]);
    expect(after[0]!.note).toBe("too generic");

    // The accepted examples but the rejected one, at most the target.
    const kept = Math.min((await getJob("first")).progress.acceptedCount! - 1, 6);
    const published = await runCli(["synth", "publish", "first", "--dataset", "synthetic", "--version-id", "gen1", ...conn]);
    expect(published.stderr).toBe("");
    expect(published.stdout).toBe(`published ${kept} examples as datasets/synthetic/versions/gen1\nits quality report: lathe datasets report synthetic@gen1\n`);
    expect((await getJob("first")).publishedDatasetVersion).toBe("datasets/synthetic/versions/gen1");
    const report = await runCli(["datasets", "report", "synthetic@gen1", ...conn]);
    expect(report.stdout).toMatch(new RegExp(`^datasets/synthetic/versions/gen1  ${kept} rows`));
  }, 120_000);

  const hasTmux = spawnSync("tmux", ["-V"]).status === 0;
  it.skipIf(!hasTmux)("review on a terminal shows one pending item at a time with its keys: a approves, r rejects with a reason, s skips, q quits (needs tmux)", async () => {
    const created = await runCli(["synth", "create", ...task, "--examples", shots, "--count", "4", ...teacherFlags, "--review-fraction", "1", "--id", "second", "--watch", ...conn]);
    expect(created.stderr).toBe("");
    const items = await listItems("second");
    expect(items.length).toBeGreaterThanOrEqual(4);
    const n = items.length;

    // A terminal of its own: a tmux server on its own socket, 120 columns by 40 rows.
    const socket = `lathe-synth-${process.pid}`;
    const tmux = (...args: string[]) => execFileSync("tmux", ["-L", socket, "-f", "/dev/null", ...args], { encoding: "utf8" });
    const screen = () => tmux("capture-pane", "-p", "-t", "review");
    const shows = async (text: string) => {
      let last = "";
      try {
        return await waitFor(() => ((last = screen()).includes(text) ? last : undefined), { timeoutMs: 20_000, what: `"${text}" on the screen` });
      } catch (err) {
        throw new Error(`${(err as Error).message}; the screen shows:\n${last}`);
      }
    };
    const quote = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
    tmux("new-session", "-d", "-s", "review", "-x", "120", "-y", "40", [process.execPath, cliPath, "synth", "review", "second", ...conn].map(quote).join(" "));
    try {
      tmux("set-option", "-t", "review", "remain-on-exit", "on");
      const first = await shows(`item 1 of ${n}`);
      expect(first).toContain(items[0]!.example.messages[0]!.content);
      expect(first).toContain(items[0]!.example.messages[1]!.content.slice(0, 60));
      expect(first).toContain("a approve   r reject   s skip   q quit");
      expect(first).toMatch(/similarity to the seed set|no seed set/);

      tmux("send-keys", "-t", "review", "a");
      expect(await shows(`item 2 of ${n}`)).toContain("approved item 1");
      tmux("send-keys", "-t", "review", "r");
      await shows("reason for rejecting (Enter to submit, Esc to go back):");
      tmux("send-keys", "-t", "review", "-l", "off topic");
      tmux("send-keys", "-t", "review", "Enter");
      expect(await shows(`item 3 of ${n}`)).toContain("rejected item 2: off topic");
      tmux("send-keys", "-t", "review", "s");
      expect(await shows(`item 4 of ${n}`)).toContain("skipped item 3: it stays pending");
      tmux("send-keys", "-t", "review", "q");
      const end = await shows("still pending");
      expect(end).toContain(`generationJobs/second: 1 approved, 1 rejected, 1 skipped; ${n - 2} of ${n} still pending`);
    } finally {
      tmux("kill-server");
    }

    const after = await listItems("second");
    expect(after.map((i) => i.state)).toEqual(["STATE_APPROVED", "STATE_REJECTED", ...after.slice(2).map(() => "STATE_PENDING")]);
    expect(after[1]!.note).toBe("off topic");

    // Without a terminal, the review says which flags to use instead.
    const piped = await runCli(["synth", "review", "second", ...conn]);
    expect(piped.code).toBe(1);
    expect(piped.stderr).toBe("lathe: lathe synth review second reads keys from a terminal, and this is not one; without one, list the items with --list, then decide with --approve-all, or --reject ID… --note TEXT\n");
  }, 120_000);

  it("errors say what is wrong and exit 1; cancel stops a running job", async () => {
    const bad = join(dataDir, "bad.jsonl");
    writeFileSync(bad, `${JSON.stringify(real(1))}\n${JSON.stringify({ prompt: "a question of some length", completion: "an answer" })}\n`);
    const create = (args: string[]) => runCli(["synth", "create", ...task, "--count", "3", ...teacherFlags, ...args, ...conn]);
    // Refused before anything is sent: they can run at once.
    const [badRow, noFile, noExamples, keyGiven, fraction, note] = await Promise.all([
      create(["--examples", bad]),
      create(["--examples", "nope.jsonl"]),
      create([]),
      create(["--examples", shots, "--teacher-key-env", KEY]),
      create(["--examples", shots, "--review-fraction", "2"]),
      runCli(["synth", "review", "first", "--note", "why", ...conn]),
    ]);
    expect(badRow.stderr).toBe(`lathe: --examples ${bad}:2: in prompt/completion format, but the file is in chat messages format\n`);
    expect(noFile.stderr).toBe("lathe: --examples nope.jsonl: no such file, and not a dataset version DATASET@VERSION\n");
    expect(noExamples.stderr).toBe("lathe: --examples: give a FILE.jsonl of chat rows to show the teacher, or a dataset version D@V of real examples\n");
    expect(keyGiven.stderr).toMatch(/^lathe: --teacher-key-env \S+: expected the name of an environment variable/);
    expect(fraction.stderr).toBe("lathe: --review-fraction 2: expected a number from 0 to 1\n");
    expect(note.stderr).toBe("lathe: --note is the reason for --reject: give --reject ID… too\n");
    for (const r of [badRow, noFile, noExamples, keyGiven, fraction, note]) expect(r.code).toBe(1);

    // One request a minute: the job runs long enough to be cancelled.
    expect((await create(["--examples", shots, "--rpm", "1", "--id", "third"])).code).toBe(0);
    const cancelled = await runCli(["synth", "cancel", "third", ...conn]);
    expect(cancelled.stderr).toBe("");
    expect(cancelled.stdout).toMatch(/^cancelled generationJobs\/third after \d\/3 accepted examples\n$/);
    const watched = await runCli(["synth", "watch", "third", ...conn]);
    expect(watched.code).toBe(1);
    expect(watched.stdout).toMatch(/^cancelled: generated \d+, /);
    expect(watched.stderr).toMatch(/^lathe: generationJobs\/third was cancelled after \d\/3 accepted examples; what it made can still be reviewed and published\n$/);
    const again = await runCli(["synth", "cancel", "third", ...conn]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("FAILED_PRECONDITION");
    const missing = await runCli(["synth", "get", "nope", ...conn]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("NOT_FOUND");
  }, 60_000);
});
