import { baseConfigSchema } from "@lathe/kit";

/**
 * The dataset service's environment: the kit's variables (LATHE_GRPC_PORT, LATHE_PG_URL,
 * LATHE_NATS_URL, LATHE_API_KEYS, …; see libs/kit/src/config.ts). Nothing of its own yet.
 * It reads LATHE_IMPORT_ROOTS: a `tokenizer_model` given as a server path must lie inside one
 * (default none, so only registered models, `models/{id}`, can be named), and it keeps the
 * tokenizer files of registered models under LATHE_DATA_DIR/cache/dataset-tokenizers.
 */
export const configSchema = baseConfigSchema;
