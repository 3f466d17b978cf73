import { baseConfigSchema } from "@lathe/kit";

/**
 * The trainer service's environment: the kit's variables (LATHE_GRPC_PORT, LATHE_PG_URL,
 * LATHE_NATS_URL, LATHE_API_KEYS, …; see libs/kit/src/config.ts). Nothing of its own yet.
 */
export const configSchema = baseConfigSchema;
