export * from "./minhash.js";
export * from "./lsh.js";
export * from "./dedup.js";
export * from "./pii.js";
export * from "./random.js";
