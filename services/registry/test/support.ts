import { fromGrpcError, type AppError } from "@lathe/kit";
import { GgufType, type ArtifactFormat, type DownloadAdapterVersionResponse, type RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";

/* Shared by the registry's integration tests. */

/** The error a call failed with; fails the test when the call succeeds. */
export const fails = (p: Promise<unknown>): Promise<AppError> =>
  p.then(
    () => {
      throw new Error("the call succeeded");
    },
    (e: unknown) => e as AppError,
  );

/** Downloads a version (GGUF as F32 unless told); resolves to its files, or rejects with the AppError that ended the stream. */
export function download(client: RegistryServiceClient, name: string, format: ArtifactFormat, ggufType = GgufType.GGUF_TYPE_F32): Promise<{ path: string; digest: string; bytes: Buffer }[]> {
  return new Promise((resolve, reject) => {
    const files: { path: string; digest: string; parts: Buffer[] }[] = [];
    const s = client.downloadAdapterVersion({ name, format, ggufType });
    s.on("data", (m: DownloadAdapterVersionResponse) => {
      if (m.fileHeader) files.push({ path: m.fileHeader.path, digest: m.fileHeader.digest, parts: [] });
      else if (m.chunk) files[files.length - 1]!.parts.push(m.chunk);
    });
    s.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
    s.on("end", () => resolve(files.map((f) => ({ path: f.path, digest: f.digest, bytes: Buffer.concat(f.parts) }))));
  });
}
