import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeTinyModel } from "@lathe/models";
import { AppError, call, createClient } from "@lathe/kit";
import { Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { startTestPlatform, testKeys, type TestPlatform } from "@lathe/testing";
import { createRegistryService } from "../src/index.js";

const tinyDir = join(mkdtempSync(join(tmpdir(), "lathe-page-tokens-")), "tiny");

async function rejection(p: Promise<unknown>): Promise<AppError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

describe("RegistryService page tokens are good only for the list and query that gave them", () => {
  let t: TestPlatform;
  let acme: RegistryServiceClient;
  let globex: RegistryServiceClient;

  beforeAll(async () => {
    await writeTinyModel(tinyDir, { seed: 1 });
    t = await startTestPlatform({ factories: [createRegistryService], memoryBus: true, env: { LATHE_IMPORT_ROOTS: dirname(tinyDir) } });
    acme = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
    globex = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.globex });
    for (const client of [acme, globex]) {
      for (const id of ["pt-a", "pt-b", "pt-c"]) {
        await call(client, "createModel", { modelId: id, model: Model.fromPartial({ sourceUri: tinyDir }), requestId: "" });
      }
    }
  });
  afterAll(async () => {
    acme?.close();
    globex?.close();
    await t?.stop();
  });

  const firstModelsToken = async (client: RegistryServiceClient) => {
    const page = await call(client, "listModels", { pageSize: 1, pageToken: "" });
    expect(page.nextPageToken).not.toBe("");
    return page.nextPageToken;
  };

  it("follows a ListModels token to the next page", async () => {
    const next = await call(acme, "listModels", { pageSize: 1, pageToken: await firstModelsToken(acme) });
    expect(next.models.map((m) => m.name)).toEqual(["models/pt-b"]);
  });

  it("refuses a ListModels token given to ListAdapters, and another tenant's token, as INVALID_ARGUMENT on page_token", async () => {
    const token = await firstModelsToken(acme);
    const adapters = await rejection(call(acme, "listAdapters", { parent: "models/pt-a", pageSize: 1, pageToken: token, filter: "" }));
    expect([adapters.code, adapters.field]).toEqual(["INVALID_ARGUMENT", "page_token"]);
    const foreign = await rejection(call(globex, "listModels", { pageSize: 1, pageToken: token }));
    expect([foreign.code, foreign.field]).toEqual(["INVALID_ARGUMENT", "page_token"]);
  });

  it.each([['{"seq":1.5}'], ['{"seq":1e300}'], ['{"seq":"1"}']])("refuses a forged token %s as INVALID_ARGUMENT, not INTERNAL", async (json) => {
    const err = await rejection(call(acme, "listModels", { pageSize: 1, pageToken: Buffer.from(json).toString("base64url") }));
    expect([err.code, err.field]).toEqual(["INVALID_ARGUMENT", "page_token"]);
  });
});
