/** What a test server is and how a user would point the tests at one. */
export interface MissingServer {
  /** e.g. "PostgreSQL" */
  what: string;
  /** e.g. "LATHE_TEST_PG_URL" */
  envVar: string;
  /** e.g. "postgres://postgres@127.0.0.1:5432/postgres" */
  example: string;
  /** Why testcontainers could not be used. */
  reason: string;
}

/**
 * The error for "no server configured and none can be started": it names the env var to set,
 * with an example value, and says that no Docker engine was found for testcontainers.
 */
export function missingServerError(s: MissingServer): Error {
  return new Error(
    `${s.envVar} is not set and no Docker engine was found for testcontainers (${s.reason}), ` +
      `so the tests have no ${s.what} server. Set ${s.envVar} to a running ${s.what} server, ` +
      `e.g. ${s.envVar}=${s.example}`,
  );
}

/** The error for "a Docker engine exists but the container did not start". */
export function containerStartError(s: Omit<MissingServer, "reason">, image: string, cause: unknown): Error {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new Error(
    `${s.envVar} is not set and testcontainers could not start ${image}: ${detail}. ` +
      `Set ${s.envVar} to a running ${s.what} server, e.g. ${s.envVar}=${s.example}`,
    { cause },
  );
}

/** The URL with any password replaced, fit for an error message. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "<unparsable URL>";
  }
}
