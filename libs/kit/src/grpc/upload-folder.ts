import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { once } from "node:events";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import type { ClientWritableStream, ServiceError } from "@grpc/grpc-js";
import { prefixedDigest } from "../digest.js";
import { AppError } from "../errors.js";
import { fromGrpcError } from "../errors.js";

/** One message of a folder upload stream: the header, a file header, or a chunk of a file. */
export interface FolderUploadMessage<H> {
  header?: H | undefined;
  fileHeader?: { path: string; sizeBytes: number; digest: string } | undefined;
  chunk?: Buffer | undefined;
}

/** The files of a local folder to upload: paths with `/`, hidden entries left out, sorted. */
export async function localFolderFiles(dir: string): Promise<{ path: string; abs: string; size: number }[]> {
  const out: { path: string; abs: string; size: number }[] = [];
  const visit = async (abs: string, rel: string[]): Promise<void> => {
    for (const e of (await readdir(abs)).sort()) {
      if (e.startsWith(".")) continue;
      const p = join(abs, e);
      // The caller's own machine: links are followed, as `cp -L` would.
      const s = await stat(p);
      if (s.isDirectory()) await visit(p, [...rel, e]);
      else if (s.isFile()) out.push({ path: [...rel, e].join("/"), abs: p, size: s.size });
    }
  };
  const s = await stat(dir).catch(() => undefined);
  if (!s?.isDirectory()) throw new AppError("INVALID_ARGUMENT", "PATH_NOT_A_FOLDER", `${dir} is not a folder`);
  await visit(dir, []);
  return out;
}

async function sha256(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return h.digest("hex");
}

/**
 * Uploads a folder from this machine over a client stream: the header, then for each file a
 * file header (path, size, sha256) and its bytes in 1 MiB chunks, with backpressure. Resolves
 * with the server's answer; server errors come back as AppError.
 */
export async function uploadFolder<H, Res>(
  start: (callback: (err: ServiceError | null, res?: Res) => void) => ClientWritableStream<FolderUploadMessage<H>>,
  header: H,
  dir: string,
): Promise<Res> {
  const files = await localFolderFiles(dir);
  const digests = await Promise.all(files.map((f) => sha256(f.abs)));
  let settle!: { resolve: (r: Res) => void; reject: (e: unknown) => void };
  const answer = new Promise<Res>((resolve, reject) => (settle = { resolve, reject }));
  const call = start((err, res) => (err ? settle.reject(fromGrpcError(err)) : settle.resolve(res as Res)));
  let answered = false;
  void answer.then(
    () => (answered = true),
    () => (answered = true),
  );
  const write = async (m: FolderUploadMessage<H>) => {
    if (!call.write(m)) await Promise.race([once(call, "drain"), answer.then(() => undefined, () => undefined)]);
  };
  try {
    await write({ header });
    for (const [i, f] of files.entries()) {
      if (answered) break;
      await write({ fileHeader: { path: f.path, sizeBytes: f.size, digest: prefixedDigest(digests[i]!) } });
      for await (const chunk of createReadStream(f.abs, { highWaterMark: 1 << 20 })) {
        if (answered) break;
        await write({ chunk: chunk as Buffer });
      }
    }
    call.end();
  } catch (err) {
    call.cancel();
    throw err;
  }
  return answer;
}
