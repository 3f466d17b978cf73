/**
 * The native addon (binding/binding.cpp over include/lathe_engine.h): where it lies, loading it on
 * first use, and calling into it so that what it throws comes out as an EngineError.
 */
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { EngineError, type EngineErrorCode } from "./errors.js";
import type * as native from "./native.js";

/**
 * The codes the addon's errors carry: the engine's lathe_status_string names (the binding sets
 * `code` from it) and FAILED_PRECONDITION. Checked against EngineErrorCode by the compiler; an
 * error with another `code` (a Node system error) is not the engine's and passes through.
 */
const CODES: ReadonlySet<string> = new Set<EngineErrorCode>(["INVALID_ARGUMENT", "UNSUPPORTED", "OUT_OF_MEMORY", "NAN", "CANCELLED", "INTERNAL", "FAILED_PRECONDITION"]);

/** Rebuilds an error thrown by the addon as an EngineError; anything else passes through. */
function rethrow(err: unknown): never {
  if (err instanceof Error && typeof (err as Partial<native.NativeError>).code === "string" && CODES.has((err as native.NativeError).code)) {
    throw new EngineError((err as native.NativeError).code, err.message, { cause: err });
  }
  throw err;
}

/** Runs a synchronous call into the addon; its errors become EngineErrors. */
export function call<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    return rethrow(err);
  }
}

/** Awaits a call into the addon; its rejections become EngineErrors. */
export async function callAsync<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    return rethrow(err);
  }
}

/** Where `build:native` puts the addon: <package>/build/node/Release (cmake-js -O build/node; plain CMake builds use build/), reached the same way from ts/ and dist/. */
export const ADDON_PATH = fileURLToPath(new URL("../build/node/Release/lathe_engine_node.node", import.meta.url));

let addon: native.NativeAddon | null = null;

/** Loads the addon on first use (not at import, so that importing never fails). */
export function loadAddon(): native.NativeAddon {
  if (addon !== null) return addon;
  if (!existsSync(ADDON_PATH)) {
    throw new EngineError(
      "FAILED_PRECONDITION",
      `the native engine is not built (${ADDON_PATH} is missing): run \`pnpm --filter @lathe/engine run build:native\` (needs cmake and a C++17 compiler)`,
    );
  }
  addon = createRequire(import.meta.url)(ADDON_PATH) as native.NativeAddon;
  return addon;
}
