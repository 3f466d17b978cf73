import { fileURLToPath } from "node:url";

/**
 * Path of the binary FileDescriptorSet of every Lathe proto (with its imports), built by
 * `buf build` next to the generated code. Servers feed it to gRPC server reflection.
 */
export const descriptorSetPath: string = fileURLToPath(
  new URL("../descriptor/lathe.binpb", import.meta.url),
);
