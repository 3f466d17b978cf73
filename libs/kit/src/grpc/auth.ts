import { Metadata } from "@grpc/grpc-js";
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

/**
 * A key of `tenant` from the key map (LATHE_API_KEYS), for work a service does for a tenant after
 * the call that asked for it (a rollout, an evaluation run, an event): no caller's key is at hand.
 * FAILED_PRECONDITION when the tenant has none.
 */
export function tenantKey(apiKeys: Readonly<Record<string, string>>, tenant: string): string {
  const key = Object.entries(apiKeys).find(([, t]) => t === tenant)?.[0];
  if (key === undefined) throw new AppError("FAILED_PRECONDITION", "TENANT_HAS_NO_KEY", `no API key of tenant ${tenant} is configured (LATHE_API_KEYS) to act for it`);
  return key;
}

/** Metadata that calls another service as `tenant`, with {@link tenantKey}. */
export function tenantMetadata(apiKeys: Readonly<Record<string, string>>, tenant: string): Metadata {
  const md = new Metadata();
  md.set("authorization", `Bearer ${tenantKey(apiKeys, tenant)}`);
  return md;
}
