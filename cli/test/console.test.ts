import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, waitFor } from "@lathe/testing";
import { runCli, startUp } from "./cli-process.js";

/**
 * The web console in a real browser (Debian's chromium through playwright-core) against
 * `lathe up`: sign-in, a job's curves growing while it trains, the datasets' quality report, an
 * evaluation's metrics and a comparison, an alias moved from the page, a streamed chat with a
 * served adapter, and a second tenant that sees none of the first's resources. Each page is
 * saved as a screenshot under test-output/console/ (git-ignored) for a reader to look at.
 */

const chromiumPath = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => existsSync(p));
const shots = fileURLToPath(new URL("../../test-output/console/", import.meta.url));

function rows(n: number): string {
  const products = ["router", "laptop", "phone", "printer", "monitor", "keyboard", "camera", "tablet"];
  const issues = ["does not turn on", "keeps restarting", "is very slow", "shows an error code", "loses its connection"];
  return (
    Array.from({ length: n }, (_, i) =>
      JSON.stringify({
        messages: [
          { role: "user", content: `My ${products[i % products.length]} ${issues[i % issues.length]} (ticket ${1000 + i}). What should I do?` },
          { role: "assistant", content: `Unplug the ${products[i % products.length]} for thirty seconds and start it again. If it still ${issues[i % issues.length]}, reply to ticket ${1000 + i}.` },
        ],
      }),
    ).join("\n") + "\n"
  );
}

/** expect.poll with room for a page to load and a service to answer. */
const poll = <T>(fn: () => Promise<T> | T, timeout = 15_000) => expect.poll(fn, { timeout, interval: 100 });

if (!chromiumPath) {
  console.warn("console browser tests skipped: Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)");
}

describe.skipIf(!chromiumPath)("the web console (chromium against lathe up)", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "lathe-console-"));
  const keyB = "key-globex-console-0123456789";
  let up: Awaited<ReturnType<typeof startUp>>;
  let http: string;
  let keyA: string;
  let conn: string[];
  let browser: Browser;
  let page: Page;

  const cli = async (args: string[]) => {
    const r = await runCli(args);
    expect(r.code, `lathe ${args.join(" ")}\n${r.stderr}`).toBe(0);
    return r;
  };
  const shot = (name: string, p: Page = page) => p.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

  beforeAll(async () => {
    mkdirSync(shots, { recursive: true });
    up = await startUp(["--data-dir", dataDir, "--port", String(await freePort())], { ...process.env, LATHE_API_KEYS: `${keyB}=globex`, LATHE_GATEWAY_THREADS: "1" });
    http = /OpenAI-compatible HTTP: (\S+)\/v1/.exec(up.output())![1]!;
    conn = ["--server", up.address, "--data-dir", dataDir];
    keyA = readFileSync(join(dataDir, "api-key"), "utf8").trim();
    const local = join(dataDir, "local");
    mkdirSync(local);
    await cli(["models", "init-tiny", join(local, "tiny"), "--seed", "1"]);
    await cli(["models", "create", "tiny", "--path", join(local, "tiny"), ...conn]);
    writeFileSync(join(local, "support.jsonl"), rows(20));
    await cli(["datasets", "create", "support", join(local, "support.jsonl"), "--tokenizer-model", "models/tiny", ...conn]);
    await cli(["datasets", "derive", "support@v1", "--split", "0.2", "--seed", "1", "--version-id", "s", ...conn]);
    // Version 1 of tiny/support, aliased prod.
    const train = ["--model", "tiny", "--train", "support@s-train", "--lora-r", "4", "--lora-alpha", "8", "--max-seq-length", "128", "--no-packing", "--grad-accum", "1", "--register", "tiny/support"];
    await cli(["jobs", "create", "--id", "first", ...train, "--epochs", "1", "--batch-size", "4", "--watch", ...conn]);
    await waitFor(async () => (await runCli(["adapters", "versions", "tiny/support", "--json", ...conn])).stdout.includes("versions/1") || undefined, { timeoutMs: 30_000, intervalMs: 300, what: "version 1" });
    await cli(["adapters", "alias", "tiny/support", "1", "--alias", "prod", "--reason", "first version", ...conn]);
    const short = ["--dataset", "support@s-eval", "--max-tokens", "6", "--temperature", "0", "--watch", ...conn];
    // Tenant B: a dataset of its own, and nothing else.
    writeFileSync(join(local, "globex.jsonl"), rows(4));
    await Promise.all([
      cli(["evals", "create", "--model", "tiny", "--id", "plain", ...short]),
      cli(["evals", "create", "--model", "tiny", "--shots", "2", "--train", "support@s-train", "--baseline", "tiny", "--metrics", "rouge,exact_match", "--id", "fewshot", ...short]),
      cli(["deployments", "create", "tiny:support@prod", "--id", "support", "--served-name", "support", "--wait", ...conn]),
      cli(["datasets", "create", "globex-tickets", join(local, "globex.jsonl"), "--server", up.address, "--api-key", keyB]),
    ]);
    browser = await chromium.launch({ executablePath: chromiumPath!, args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    if (up?.child.exitCode === null) up.child.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("refuses a wrong key, then signs in with the tenant's key, which stays out of the address", async () => {
    await page.goto(`${http}/console`);
    await shot("login");
    await page.getByLabel("API key").fill("not-a-key");
    await page.getByRole("button", { name: "Sign in" }).click();
    await poll(() => page.getByRole("alert").textContent()).toContain("The key was refused: Incorrect API key provided.");
    // The test runs without DOM types: browser expressions are passed as text.
    expect(await page.evaluate<number>("sessionStorage.length")).toBe(0);
    await page.getByLabel("API key").fill(keyA);
    await page.getByRole("button", { name: "Sign in" }).click();
    await poll(() => page.getByTestId("tenant").textContent()).toBe("default");
    expect(page.url()).not.toContain(keyA);
    // Jobs list: the first job, with its state.
    await poll(() => page.locator("#jobs-table").textContent()).toContain("first");
    expect(await page.locator("#jobs-table").textContent()).toContain("succeeded");
    await shot("jobs");
  });

  it("a training job's loss curve gains points while it trains, without moving the page, then shows checkpoints and estimate vs actual", async () => {
    // Enough steps to be seen training: 16 rows, one per step, three epochs, eval every 8 steps.
    await cli(["jobs", "create", "--id", "live", "--model", "tiny", "--train", "support@s-train", "--eval", "support@s-eval", "--lora-r", "4", "--lora-alpha", "8", "--max-seq-length", "128", "--no-packing", "--grad-accum", "1",
      "--batch-size", "1", "--epochs", "3", "--logging-steps", "1", "--eval-steps", "8", "--save-steps", "16", "--register", "tiny/support", ...conn]);
    await page.goto(`${http}/console/#/jobs/${encodeURIComponent("fineTuningJobs/live")}`);
    const chart = page.locator(".chart-box").first();
    const points = async () => Number(await chart.getAttribute("data-points"));
    const state = async () => (await page.locator("#job-title .badge").textContent()) ?? "";
    // Counts seen while the page said "running".
    const seen: number[] = [];
    let box: { height: number } | null = null;
    let moved = false;
    await waitFor(
      async () => {
        const s = await state();
        if (s === "running") {
          const n = await points();
          seen.push(n);
          const b = await chart.boundingBox();
          if (box && b && b.height !== box.height) moved = true;
          box = b ?? box;
          if (seen.length === 3) await shot("job-running");
        }
        return s === "succeeded" || s === "failed" ? s : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 150, what: "the job to end" },
    );
    expect(await state()).toBe("succeeded");
    const growing = seen.filter((n, i) => i > 0 && n > seen[i - 1]!);
    expect(growing.length, `points seen while running: ${seen.join(",")}`).toBeGreaterThanOrEqual(2);
    expect(moved).toBe(false);
    await poll(points).toBe(48);
    expect(await page.getByTestId("job-steps").textContent()).toBe("step 48 of 48");
    await poll(() => page.locator("#checkpoints tbody tr").count()).toBeGreaterThan(0);
    expect(await page.locator("table", { hasText: "Estimate and actual" }).textContent()).toMatch(/Steps\s*48\s*48/);
    await shot("job-done");
    // At phone width nothing overflows the page sideways.
    await page.setViewportSize({ width: 390, height: 844 });
    expect(await page.evaluate<boolean>("document.documentElement.scrollWidth <= window.innerWidth")).toBe(true);
    await shot("job-phone");
    await page.setViewportSize({ width: 1280, height: 900 });
  }, 150_000);

  it("datasets: versions, the quality report with its checks, failing rows and a token histogram", async () => {
    await page.goto(`${http}/console/#/datasets/${encodeURIComponent("datasets/support/versions/v1")}`);
    await poll(() => page.locator("table", { hasText: "Versions" }).textContent()).toContain("s-train");
    await poll(() => page.locator("#checks tbody tr").count()).toBeGreaterThan(0);
    await poll(() => page.locator(".chart-box").count()).toBe(1);
    expect(Number(await page.locator(".chart-box").getAttribute("data-points"))).toBeGreaterThan(0);
    await shot("datasets");
  });

  it("evaluations: metrics with intervals, predictions beside references, the few-shot verdict, and a paired comparison", async () => {
    await page.goto(`${http}/console/#/evaluations/${encodeURIComponent("evaluationRuns/fewshot")}`);
    await poll(() => page.locator("#run-metrics").textContent()).toMatch(/rouge_l\d\.\d{3}\[\d\.\d{3}, \d\.\d{3}\]/);
    await poll(() => page.locator("#predictions tbody tr").count()).toBe(4);
    expect(await page.locator("#predictions").textContent()).toContain("Unplug the");
    expect(await page.getByTestId("few-shot-verdict").textContent()).toMatch(/Few-shot baseline verdict\..*rouge_l: (better|worse|no clear difference)/);
    await page.getByLabel("Run A").selectOption("evaluationRuns/plain");
    await page.getByLabel("Run B").selectOption("evaluationRuns/fewshot");
    await page.getByRole("button", { name: "Compare" }).click();
    await poll(() => page.locator("#comparison caption").textContent()).toBe("A − B, paired over the 4 examples both runs scored");
    expect(await page.locator("#comparison tbody").textContent()).toMatch(/^rouge_l\d\.\d{3}\d\.\d{3}[+-]\d\.\d{3}\[/);
    await shot("evaluations");
  });

  it("registry: moving an alias from the page adds a move to its history; lineage and model card are shown", async () => {
    await waitFor(async () => (await runCli(["adapters", "versions", "tiny/support", "--json", ...conn])).stdout.includes("versions/2") || undefined, { timeoutMs: 30_000, intervalMs: 300, what: "version 2" });
    await page.goto(`${http}/console/#/registry/${encodeURIComponent("models/tiny/adapters/support")}`);
    const alias = page.getByTestId("alias-prod");
    await poll(() => page.getByTestId("alias-prod-version").textContent()).toBe("1");
    await alias.getByLabel("Move to version").selectOption("models/tiny/adapters/support/versions/2");
    await alias.getByLabel("Reason").fill("better eval loss");
    await alias.getByRole("button", { name: "Move prod" }).click();
    await poll(() => page.getByTestId("alias-prod-version").textContent()).toBe("2");
    const latest = page.locator("#alias-prod-history tbody tr").first();
    expect(await latest.textContent()).toMatch(/12manualbetter eval loss/);
    expect(await page.locator("#alias-prod-history tbody tr").count()).toBe(2);
    // The CLI sees the same move.
    expect((await cli(["adapters", "alias-get", "tiny/support", "prod", ...conn])).stdout).toContain("better eval loss");
    await poll(() => page.getByTestId("lineage-graph").locator("rect").count()).toBeGreaterThan(2);
    await poll(() => page.getByTestId("model-card").textContent()).toContain("tiny");
    await shot("registry");
  });

  it("deployments: what is served, and a chat with the served adapter streamed into the page", async () => {
    await page.goto(`${http}/console/#/deployments`);
    await poll(() => page.locator("#deployments-table").textContent()).toContain("support");
    await poll(() => page.getByLabel("Model").locator("option").count()).toBeGreaterThan(0);
    await page.getByLabel("Model").selectOption("support");
    await page.getByLabel("Max tokens").fill("8");
    await page.getByLabel("Message").fill("My router keeps restarting.");
    const answered = page.waitForResponse((r) => r.url().endsWith("/v1/chat/completions"));
    await page.getByRole("button", { name: "Send" }).click();
    const res = await answered;
    expect(res.status()).toBe(200);
    expect(res.headers()["content-type"]).toContain("text/event-stream");
    expect(JSON.parse(res.request().postData()!)).toMatchObject({ model: "support", stream: true, max_tokens: 8 });
    const reply = page.locator('.msg[data-role="assistant"]:not([data-streaming])');
    await poll(() => reply.count(), 30_000).toBe(1);
    // The page shows what the stream sent, piece by piece joined.
    const streamed = (await res.text())
      .split("\n\n")
      .filter((e) => e.startsWith("data: {"))
      .map((e) => (JSON.parse(e.slice(6)) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? "")
      .join("");
    expect(await reply.textContent()).toBe(streamed || "(empty answer)");
    await shot("deployments");
  });

  it("tenant B's console shows none of tenant A's resources, and its key cannot reach them through the facade", async () => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const b = await ctx.newPage();
    await b.goto(`${http}/console/`);
    await b.getByLabel("API key").fill(keyB);
    await b.getByRole("button", { name: "Sign in" }).click();
    await poll(() => b.getByTestId("tenant").textContent()).toBe("globex");
    await poll(() => b.locator("main").textContent()).toContain("No fine-tuning jobs yet");
    await b.goto(`${http}/console/#/datasets`);
    await poll(() => b.locator("nav[aria-label=Datasets]").textContent()).toContain("globex-tickets");
    expect(await b.locator("nav[aria-label=Datasets]").textContent()).not.toContain("support");
    await b.goto(`${http}/console/#/evaluations`);
    await poll(() => b.locator("main").textContent()).toContain("No evaluation runs yet");
    await b.goto(`${http}/console/#/registry`);
    await poll(() => b.locator("main").textContent()).toContain("No adapters yet");
    await b.goto(`${http}/console/#/deployments`);
    await poll(() => b.locator("main").textContent()).toContain("Nothing deployed");
    await shot("tenant-b", b);
    // A's job by name, with B's key: not found, as over gRPC.
    const status = await b.evaluate(async (key) => {
      const r = await fetch("/console/api/trainer/GetFineTuningJob", { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ name: "fineTuningJobs/live" }) });
      return r.status;
    }, keyB);
    expect(status).toBe(404);
    await ctx.close();
  });
});
