import { once } from "node:events";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  DatasetRow,
  DatasetServiceClient,
  DatasetServiceService,
  DatasetVersion,
  UploadDatasetVersionRequest,
} from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { AppError, createClient, createLogger, fromGrpcError, GrpcServer, invalidArgument, unimplementedHandlers } from "../src/index.js";
import { waitFor } from "../../testing/src/index.js";

// The kit's wrapper on streaming calls: a client stream (upload) and a server stream (rows).

const KEY = "key-acme-0123456789";

describe("streaming calls through the kit", () => {
  let server: GrpcServer;
  let client: DatasetServiceClient;
  let cancelledSignal: AbortSignal | undefined;

  beforeAll(async () => {
    server = new GrpcServer({ logger: createLogger({ service: "kit-test", level: "silent" }), apiKeys: { [KEY]: "acme" } });
    server.add("lathe.dataset.v1.DatasetService", DatasetServiceService, {
      ...unimplementedHandlers(DatasetServiceService, "test"),
      async uploadDatasetVersion(requests, ctx) {
        let bytes = 0;
        let parent = "";
        for await (const r of requests) {
          if (r.header) parent = r.header.parent;
          else if (r.chunk) bytes += r.chunk.length;
          if (bytes > 1000) throw invalidArgument("chunk", "the file is over 1000 bytes");
        }
        return { datasetVersion: DatasetVersion.fromPartial({ name: `${parent}/versions/${bytes}-${ctx.tenant}` }) };
      },
      async *streamDatasetRows(req, ctx) {
        for (let i = 0; i < req.limit; i++) {
          if (ctx.signal.aborted) {
            cancelledSignal = ctx.signal;
            return;
          }
          if (req.failingOnly && i === 3) throw new AppError("FAILED_PRECONDITION", "TEST_STOP", "stopped at row 3");
          yield { rows: [DatasetRow.fromPartial({ lineNumber: i + 1 })] };
          await new Promise((r) => setTimeout(r, 5));
        }
      },
    });
    const port = await server.listen("127.0.0.1", 0);
    client = createClient(DatasetServiceClient, `127.0.0.1:${port}`, { apiKey: KEY });
  });
  afterAll(async () => {
    client?.close();
    await server?.shutdown(500);
  });

  const upload = (msgs: UploadDatasetVersionRequest[]) =>
    new Promise<DatasetVersion>((resolve, reject) => {
      const call = client.uploadDatasetVersion((err, res) => (err ? reject(fromGrpcError(err)) : resolve(res!.datasetVersion!)));
      for (const m of msgs) call.write(m);
      call.end();
    });

  it("reads a client stream to its end and answers once", async () => {
    const v = await upload([
      UploadDatasetVersionRequest.fromPartial({ header: { parent: "datasets/d" } }),
      { chunk: Buffer.alloc(300) },
      { chunk: Buffer.alloc(200) },
    ]);
    expect(v.name).toBe("datasets/d/versions/500-acme");
  });

  it("maps an error thrown mid-stream to its status and field", async () => {
    const err = await upload([{ chunk: Buffer.alloc(800) }, { chunk: Buffer.alloc(800) }]).catch((e: unknown) => e as AppError);
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).code).toBe("INVALID_ARGUMENT");
    expect((err as AppError).field).toBe("chunk");
  });

  it("streams responses and ends the stream with the handler's error", async () => {
    const lines: number[] = [];
    const call = client.streamDatasetRows({ name: "x", offset: 0, limit: 10, failingOnly: true });
    call.on("data", (r: { rows: DatasetRow[] }) => lines.push(...r.rows.map((x) => x.lineNumber)));
    const [err] = (await once(call, "error")) as [Parameters<typeof fromGrpcError>[0]];
    expect(lines).toEqual([1, 2, 3]);
    expect(fromGrpcError(err)).toMatchObject({ code: "FAILED_PRECONDITION", reason: "TEST_STOP" });
  });

  it("aborts the handler's signal when the client cancels", async () => {
    const call = client.streamDatasetRows({ name: "x", offset: 0, limit: 100_000, failingOnly: false });
    call.on("error", () => undefined);
    await once(call, "data");
    call.cancel();
    await waitFor(() => cancelledSignal?.aborted, { what: "the handler to see the cancel" });
  });
});
