import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Dataset, DatasetRow, DatasetServiceClient, DatasetServiceService, DatasetVersion, UploadDatasetVersionHeader, type DatasetVersion as DatasetVersionT } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { AppError, call, createClient, createLogger, fromGrpcError, GrpcServer, unimplementedHandlers } from "../src/index.js";

// Unary calls have a deadline; streaming calls have none, only a limit on how long they may go
// without a message either way. Here both are 400 ms, and the streams run three times as long.

const KEY = "key-acme-0123456789";
const LIMIT_MS = 400;
const STEP_MS = 80;
const STEPS = 15;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("deadlines of unary calls and idle limits of streaming calls", () => {
  let server: GrpcServer;
  let client: DatasetServiceClient;
  let address: string;

  beforeAll(async () => {
    server = new GrpcServer({ logger: createLogger({ service: "kit-test", level: "silent" }), apiKeys: { [KEY]: "acme" } });
    server.add("lathe.dataset.v1.DatasetService", DatasetServiceService, {
      ...unimplementedHandlers(DatasetServiceService, "test"),
      async getDataset(req) {
        await sleep(Number(req.name.split("/")[1]));
        return { dataset: Dataset.fromPartial({ name: req.name }) };
      },
      async uploadDatasetVersion(requests) {
        let chunks = 0;
        let parent = "";
        for await (const r of requests) {
          if (r.header) parent = r.header.parent;
          if (r.chunk) chunks++;
        }
        // Checking what was uploaded takes a while, with nothing to send meanwhile.
        if (parent === "datasets/slow") await sleep(3 * LIMIT_MS);
        return { datasetVersion: DatasetVersion.fromPartial({ name: `datasets/d/versions/${chunks}` }) };
      },
      async *streamDatasetRows(req, ctx) {
        // limit rows, one per STEP_MS; an offset of 1 means: wait three limits before the first.
        if (req.offset === 1) await sleep(3 * LIMIT_MS);
        for (let i = 0; i < req.limit && !ctx.signal.aborted; i++) {
          yield { rows: [DatasetRow.fromPartial({ lineNumber: i + 1 })] };
          await sleep(STEP_MS);
        }
      },
    });
    address = `127.0.0.1:${await server.listen("127.0.0.1", 0)}`;
    client = createClient(DatasetServiceClient, address, { apiKey: KEY, deadlineMs: LIMIT_MS, idleTimeoutMs: LIMIT_MS });
  });
  afterAll(async () => {
    client?.close();
    await server?.shutdown(500);
  });

  /** Uploads `chunks` chunks, one per STEP_MS; with `stallAfter`, stops sending after that many (without ending). */
  const upload = (c: DatasetServiceClient, chunks: number, stallAfter?: number, parent = "datasets/d") =>
    new Promise<DatasetVersionT>((resolve, reject) => {
      const s = c.uploadDatasetVersion((err, res) => (err ? reject(fromGrpcError(err)) : resolve(res!.datasetVersion!)));
      s.write({ header: UploadDatasetVersionHeader.fromPartial({ parent }) });
      void (async () => {
        for (let i = 0; i < chunks; i++) {
          if (i === stallAfter) return;
          s.write({ chunk: Buffer.alloc(1024, i) });
          await sleep(STEP_MS);
        }
        s.end();
      })();
    });

  const rows = (c: DatasetServiceClient, limit: number, offset = 0, opts = {}) =>
    new Promise<number>((resolve, reject) => {
      let n = 0;
      const s = c.streamDatasetRows({ name: "datasets/d/versions/v1", limit, offset, failingOnly: false }, opts);
      s.on("data", () => n++);
      s.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
      s.on("end", () => resolve(n));
    });

  const idleError = async (p: Promise<unknown>, message = `no progress for ${LIMIT_MS / 1000} s: nothing was sent or received`) => {
    const err = await p.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).code).toBe("DEADLINE_EXCEEDED");
    expect((err as AppError).message).toBe(message);
  };

  it("keeps the deadline of a unary call", async () => {
    expect((await call(client, "getDataset", { name: "datasets/0" })).dataset?.name).toBe("datasets/0");
    const err = await call(client, "getDataset", { name: `datasets/${3 * LIMIT_MS}` }).then(() => undefined, (e: unknown) => e as AppError);
    expect(err?.code).toBe("DEADLINE_EXCEEDED");
  });

  it("lets an upload run past the deadline while it keeps sending", async () => {
    expect((await upload(client, STEPS)).name).toBe(`datasets/d/versions/${STEPS}`);
  });

  it("lets a server stream run past the deadline while it keeps receiving", async () => {
    expect(await rows(client, STEPS)).toBe(STEPS);
  });

  it("cancels an upload that stops sending, with 'no progress'", async () => {
    await idleError(upload(client, STEPS, 2));
  });

  it("cancels a server stream that stops sending, with 'no progress'", async () => {
    await idleError(rows(client, STEPS, 1));
  });

  it("leaves a stream with its own deadline to it (jobs watch waits for hours)", async () => {
    expect(await rows(client, 2, 1, { deadline: Infinity })).toBe(2);
  });

  it("gives the server longer than the idle limit to answer once an upload has sent everything, up to answerTimeoutMs", async () => {
    expect((await upload(client, 3, undefined, "datasets/slow")).name).toBe("datasets/d/versions/3");
    const hasty = createClient(DatasetServiceClient, address, { apiKey: KEY, idleTimeoutMs: LIMIT_MS, answerTimeoutMs: LIMIT_MS });
    try {
      await idleError(upload(hasty, 3, undefined, "datasets/slow"), `no answer ${LIMIT_MS / 1000} s after the last message was sent`);
    } finally {
      hasty.close();
    }
  });

  it("has no idle limit with idleTimeoutMs 0", async () => {
    const patient = createClient(DatasetServiceClient, address, { apiKey: KEY, deadlineMs: LIMIT_MS, idleTimeoutMs: 0 });
    try {
      expect(await rows(patient, 2, 1)).toBe(2);
    } finally {
      patient.close();
    }
  });
});
