import type { Metadata } from "@grpc/grpc-js";
import { DatasetVersion_State, type DatasetRow, type DatasetServiceClient } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { chatRoles } from "./enums.js";
import { AppError } from "./errors.js";
import { fromGrpcError } from "./errors.js";
import { call } from "./grpc/client.js";

/** A chat turn as rows, templates and OpenAI messages name it. */
export interface ChatTurn {
  role: "system" | "user" | "assistant";
  content: string;
}

/**
 * The parsed rows of a validated dataset version, in line order, read from the dataset service
 * with the caller's (or tenant's) metadata; a line that never parsed is left out. A version that
 * does not exist is INVALID_ARGUMENT on `field`; one not validated, FAILED_PRECONDITION.
 */
export async function readDatasetRows(client: DatasetServiceClient, md: Metadata, name: string, field: string): Promise<ChatTurn[][]> {
  const { datasetVersion: v } = await call(client, "getDatasetVersion", { name }, md).catch((err: unknown) => {
    if (err instanceof AppError && err.code === "NOT_FOUND") throw new AppError("INVALID_ARGUMENT", "INVALID_FIELD", `${field}: ${name} was not found`, { field });
    throw err;
  });
  if (!v || v.state !== DatasetVersion_State.STATE_VALIDATED) throw new AppError("FAILED_PRECONDITION", "DATASET_VERSION_NOT_VALIDATED", `${field}: ${name} is not validated`, { field });
  const rows: ChatTurn[][] = [];
  await new Promise<void>((resolve, reject) => {
    const stream = client.streamDatasetRows({ name, offset: 0, limit: 0, failingOnly: false }, md);
    stream.on("data", (r: { rows: DatasetRow[] }) => {
      for (const row of r.rows) {
        if (row.messages.length > 0) rows.push(row.messages.map((m) => ({ role: chatRoles.name(m.role) ?? "user", content: m.content })));
      }
    });
    stream.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
    stream.on("end", () => resolve());
  });
  return rows;
}
