import { AppError, type Logger } from "@lathe/kit";

/**
 * A write that failed for want of space (ENOSPC, or EDQUOT over a quota) as RESOURCE_EXHAUSTED,
 * which clients retry later; any other error as it is.
 */
export function diskFull(err: unknown, logger: Logger): unknown {
  const code = (err as { code?: unknown } | null)?.code;
  if (code !== "ENOSPC" && code !== "EDQUOT") return err;
  // The path is the server's own business, and the code says all an operator needs.
  logger.warn({ code }, "a write failed: the disk is full");
  return new AppError("RESOURCE_EXHAUSTED", "DISK_FULL", "the server's disk is full; nothing of this call was kept. Retry once an operator has freed space", { code });
}

/** Logged fields of an error that may come from the database: never its message or parameters, which can quote rows. */
export function errorFields(err: unknown): { errorName: string; errorCode?: string } {
  const code = (err as { code?: unknown } | null)?.code;
  return { errorName: err instanceof Error ? err.name : typeof err, ...(typeof code === "string" ? { errorCode: code } : {}) };
}
