import type { Kysely } from "kysely";
import { eventsMigration } from "@lathe/kit";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** The evaluator schema, in order. Never edit a released migration; add a new one. */
export const migrations: Record<string, (db: Kysely<any>) => Promise<void>> = {
  "0000_events": eventsMigration,
};
