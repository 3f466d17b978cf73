import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A temporary directory; `dispose()` removes it with its contents (again is harmless). */
export interface TempDir {
  path: string;
  dispose(): Promise<void>;
}

/** Creates a fresh directory under the OS temp dir whose name starts with `prefix`. */
export async function tempDir(prefix: string): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return {
    path,
    dispose: () => rm(path, { recursive: true, force: true }),
  };
}
