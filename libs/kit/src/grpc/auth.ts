import type { Metadata } from "@grpc/grpc-js";
import { AppError } from "../errors.js";

/**
 * Maps API keys to tenants. A key arrives as `authorization: Bearer <key>` or `x-api-key: <key>`;
 * a call without one, or with an unknown one, is UNAUTHENTICATED.
 */
export class ApiKeyAuth {
  private readonly keys: ReadonlyMap<string, string>;

  constructor(keys: Readonly<Record<string, string>>) {
    this.keys = new Map(Object.entries(keys));
  }

  /** The tenant of the call's key; throws UNAUTHENTICATED. */
  tenantOf(metadata: Metadata): string {
    const key = apiKeyOf(metadata);
    if (key === undefined) {
      throw new AppError("UNAUTHENTICATED", "API_KEY_MISSING", "an API key is required: send 'authorization: Bearer <key>'");
    }
    const tenant = this.keys.get(key);
    if (tenant === undefined) throw new AppError("UNAUTHENTICATED", "API_KEY_INVALID", "the API key is not valid");
    return tenant;
  }
}

function apiKeyOf(metadata: Metadata): string | undefined {
  const auth = metadata.get("authorization")[0];
  if (typeof auth === "string") {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    return m?.[1];
  }
  const key = metadata.get("x-api-key")[0];
  return typeof key === "string" && key !== "" ? key : undefined;
}
