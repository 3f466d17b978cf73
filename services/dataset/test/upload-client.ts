import { fromGrpcError } from "@lathe/kit";
import type {
  DatasetServiceClient} from "@lathe/proto/lathe/dataset/v1/dataset_service";
import {
  UploadDatasetVersionHeader,
  type DatasetRow,
  type DatasetVersion,
} from "@lathe/proto/lathe/dataset/v1/dataset_service";

/** Uploads `content` as a client stream: the header, then chunks of `chunkSize` bytes. */
export function upload(client: DatasetServiceClient, header: Partial<UploadDatasetVersionHeader>, content: Buffer | string, chunkSize = 64 * 1024): Promise<DatasetVersion> {
  const bytes = typeof content === "string" ? Buffer.from(content) : content;
  return new Promise((resolve, reject) => {
    const call = client.uploadDatasetVersion((err, res) => (err ? reject(fromGrpcError(err)) : resolve(res!.datasetVersion!)));
    call.write({ header: UploadDatasetVersionHeader.fromPartial(header) });
    for (let i = 0; i < bytes.length; i += chunkSize) call.write({ chunk: bytes.subarray(i, i + chunkSize) });
    call.end();
  });
}

/** Every row of a version, through StreamDatasetRows. */
export function rows(client: DatasetServiceClient, name: string, failingOnly = false): Promise<DatasetRow[]> {
  return new Promise((resolve, reject) => {
    const out: DatasetRow[] = [];
    const call = client.streamDatasetRows({ name, offset: 0, limit: 0, failingOnly });
    call.on("data", (r: { rows: DatasetRow[] }) => out.push(...r.rows));
    call.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
    call.on("end", () => resolve(out));
  });
}

export const jsonl = (objs: unknown[]) => objs.map((o) => (typeof o === "string" ? o : JSON.stringify(o))).join("\n") + "\n";

/** A chat row with a prompt and answer long enough to pass the length checks. */
export function chat(i: number, extra = ""): unknown {
  return {
    messages: [
      { role: "system", content: "You answer questions about the inventory system." },
      { role: "user", content: `Question ${i}: how many widgets of kind ${i} are left in the ${["north", "south", "east", "west"][i % 4]} warehouse? ${extra}` },
      { role: "assistant", content: `There are ${i * 7} widgets of kind ${i} left; the ${["north", "south", "east", "west"][i % 4]} warehouse restocks every ${i % 5 + 2} days, said item ${i}.` },
    ],
  };
}
