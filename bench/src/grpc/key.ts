/** The API key the benchmark's servers accept and its client sends. */
export const benchKeyValue = "bench-key-0123456789";
