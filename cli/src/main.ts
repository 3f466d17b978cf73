#!/usr/bin/env node
import { CommanderError } from "commander";
import { AppError } from "@lathe/kit";
import { exitQuietlyOnClosedPipe } from "./pipe.js";
import { buildProgram } from "./program.js";

exitQuietlyOnClosedPipe();

try {
  await buildProgram().parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode;
  } else if (err instanceof AppError) {
    process.stderr.write(`lathe: ${err.message} (${err.code}${err.reason !== err.code ? `, ${err.reason}` : ""})\n`);
    if (err.code === "UNAVAILABLE") process.stderr.write("lathe: is the server running? Start it with `npm run lathe -- up`.\n");
    process.exitCode = 1;
  } else {
    process.stderr.write(`lathe: ${describe(err)}\n`);
    process.exitCode = 1;
  }
}

/** What went wrong, in words, also for a thrown non-Error (an object from a library, a WASM exit status). */
function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (err && typeof err === "object") {
    const o = err as { message?: unknown; name?: unknown; errno?: unknown };
    if (typeof o.message === "string" && o.message !== "") return o.message;
    // The embedded database (PGlite, compiled with Emscripten) throws its file errors this way; 51 is ENOSPC there.
    if (o.name === "ErrnoError" && o.errno === 51) return "the disk is full: the embedded database could not write to its folder (ENOSPC)";
    try {
      return `${typeof o.name === "string" ? `${o.name}: ` : ""}${JSON.stringify(err).slice(0, 500)}`;
    } catch {
      return Object.prototype.toString.call(err);
    }
  }
  return String(err);
}
