import type { Metadata } from "@grpc/grpc-js";
import { AppError, chatRoles, fromGrpcError } from "@lathe/kit";
import { DatasetVersion_State, type DatasetRow, type DatasetServiceClient } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { mulberry32 } from "@lathe/text";
import { call } from "@lathe/kit";
import type { ChatTurn, ModelSpec } from "../db/migrations.js";

/** One eval example: the turns before the final answer, and that answer. */
export interface EvalExample {
  turns: ChatTurn[];
  reference: string;
}

/** A dataset version's parsed rows, in line order (rows that never parsed are left out). */
export async function datasetRows(client: DatasetServiceClient, md: Metadata, name: string, field: string): Promise<ChatTurn[][]> {
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

/** A row as an eval example: its turns up to its final assistant message, and that message; undefined when it ends otherwise. */
export function exampleOf(turns: readonly ChatTurn[]): EvalExample | undefined {
  const last = turns.at(-1);
  if (!last || last.role !== "assistant" || turns.length < 2) return undefined;
  return { turns: turns.slice(0, -1), reference: last.content };
}

const norm = (s: string) => s.trim().replace(/\s+/g, " ").toLowerCase();
const promptText = (turns: readonly ChatTurn[]) => norm(turns.filter((t) => t.role !== "system").map((t) => t.content).join("\n"));

/**
 * The solved examples a few-shot prompt shows: `shots` rows of the training set drawn with the
 * seed (a seeded shuffle, the first `shots`), never a row whose prompt or answer is also an eval
 * example's (the same after trimming, collapsing whitespace and lowercasing). The same draw for
 * every prompt of the run, as a k-shot prompt is usually written.
 * @throws AppError FAILED_PRECONDITION when the training set has fewer usable rows than shots
 */
export function drawShots(train: readonly ChatTurn[][], evals: readonly EvalExample[], fewShot: NonNullable<ModelSpec["fewShot"]>, field: string): EvalExample[] {
  const evalPrompts = new Set(evals.map((e) => promptText(e.turns)));
  const evalAnswers = new Set(evals.map((e) => norm(e.reference)));
  const pool: EvalExample[] = [];
  for (const row of train) {
    const ex = exampleOf(row);
    if (ex && !evalPrompts.has(promptText(ex.turns)) && !evalAnswers.has(norm(ex.reference))) pool.push(ex);
  }
  if (pool.length < fewShot.shots) {
    throw new AppError("FAILED_PRECONDITION", "NOT_ENOUGH_SHOTS", `${field}: ${fewShot.datasetVersion} has ${pool.length} rows that are not in the eval set; ${fewShot.shots} shots were asked for`, { field });
  }
  const random = mulberry32(Number(BigInt.asUintN(32, BigInt(fewShot.seed))));
  const order = pool.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order.slice(0, fewShot.shots).map((i) => pool[i]!);
}

/**
 * The turns of a few-shot prompt: the eval example's system turn (if any) first, then each shot's
 * conversation with its answer, then the eval example's own turns.
 */
export function fewShotTurns(example: EvalExample, shots: readonly EvalExample[]): ChatTurn[] {
  const system = example.turns.filter((t) => t.role === "system");
  const shown = shots.flatMap((s) => [...s.turns.filter((t) => t.role !== "system"), { role: "assistant" as const, content: s.reference }]);
  return [...system, ...shown, ...example.turns.filter((t) => t.role !== "system")];
}
