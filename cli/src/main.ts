#!/usr/bin/env node
import { CommanderError } from "commander";
import { AppError } from "@lathe/kit";
import { buildProgram } from "./program.js";

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
    process.stderr.write(`lathe: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
