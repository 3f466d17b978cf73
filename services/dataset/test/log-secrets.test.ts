import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, createClient } from "@lathe/kit";
import { DatasetServiceClient } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { startTestPlatform, testKeys, type TestPlatform } from "@lathe/testing";
import { plantedSecrets } from "../../../libs/kit/test/planted-secrets.js";
import { createDatasetService } from "../src/index.js";
import { chat, jsonl, rows, upload } from "./upload-client.js";

// Uploads rows that carry planted secrets (a card number, an email, a content marker), well
// formed and broken, through the dataset service, with a planted API key. The checks may report
// them (masked) to the caller; no log may hold them. This file checks its own logs; the run's
// scan (scripts/test-log-scan.ts) checks every log.

const card = plantedSecrets["planted card number"];
const email = plantedSecrets["planted email"];
const content = plantedSecrets["planted file content"];
const key = plantedSecrets["planted API key"];

const logDir = process.env["LATHE_TEST_LOG_DIR"];
const ownLogs = () => (logDir ? readdirSync(logDir).filter((f) => f.endsWith(`-${process.pid}.log`)).map((f) => readFileSync(join(logDir, f), "utf8")).join("") : "");

const planted = (i: number) => ({
  messages: [
    { role: "user", content: `Order ${i}: please charge card ${card} and mail the receipt to ${email}. ${content}` },
    { role: "assistant", content: `Order ${i} is placed; the receipt goes out today and the card is charged once the item ships. ${content}` },
  ],
});

describe("DatasetService keeps planted secrets out of its logs", () => {
  let t: TestPlatform;
  let client: DatasetServiceClient;
  beforeAll(async () => {
    t = await startTestPlatform({ factories: [createDatasetService], memoryBus: true, env: { LATHE_API_KEYS: `${testKeys.acme}=acme,${key}=planted` } });
    client = createClient(DatasetServiceClient, t.address, { apiKey: key });
    await call(client, "createDataset", { datasetId: "secrets", dataset: undefined, requestId: "" });
  }, 120_000);
  afterAll(async () => {
    client?.close();
    await t?.stop();
  });

  it("stores rows with a card number, an email and a content marker, reports the PII, and logs none of it", async () => {
    const v = await upload(client, { parent: "datasets/secrets" }, jsonl([...Array.from({ length: 6 }, (_, i) => planted(i)), ...Array.from({ length: 6 }, (_, i) => chat(i))]));
    const stored = await rows(client, v.name);
    expect(stored.map((r) => r.messages.map((m) => m.content).join(" ")).join(" ")).toContain(content);
    for (const value of [card, email, content, key]) expect(ownLogs()).not.toContain(value);
  });

  it("answers broken lines, a NUL in a row and an oversized line with errors a caller reads, and logs none of their content", async () => {
    const bad = [
      `{"messages": [{"role": "user", "content": "${card} ${email} ${content}"`,
      `not json at all: ${card} ${email} ${content}`,
      `{"messages":[{"role":"user","content":"${card} ${email} ${content} \\u0000 nul"},{"role":"assistant","content":"${content} \\u0000"}]}`,
      JSON.stringify({ messages: [{ role: "user", content: `${content} ${"x".repeat(3000)} ${card}` }, { role: "assistant", content: email }] }),
      ...Array.from({ length: 4 }, (_, i) => JSON.stringify(chat(i + 100))),
    ];
    await upload(client, { parent: "datasets/secrets" }, bad.join("\n") + "\n").then(
      () => undefined,
      (e: unknown) => e,
    );
    // Also a file that is not text at all, with the marker inside.
    await upload(client, { parent: "datasets/secrets" }, Buffer.concat([Buffer.from([0xff, 0xfe, 0x00]), Buffer.from(`${content} ${card}`), Buffer.from([0xc3, 0x28])])).then(
      () => undefined,
      (e: unknown) => e,
    );
    for (const value of [card, email, content, key]) expect(ownLogs()).not.toContain(value);
  });
});
