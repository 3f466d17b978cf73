import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import descriptor from "protobufjs/ext/descriptor/index.js";

/**
 * A client that knows nothing of Lathe's protos: it learns the API from the server's reflection
 * service (grpc.reflection.v1), as grpcurl does, and builds stubs from what it was told.
 */
export class ReflectionClient {
  private readonly client: grpc.Client & Record<string, (...args: unknown[]) => grpc.ClientDuplexStream<unknown, unknown>>;

  constructor(private readonly address: string) {
    const require = createRequire(import.meta.url);
    const protoPath = join(dirname(require.resolve("@grpc/reflection")), "..", "proto", "grpc", "reflection", "v1", "reflection.proto");
    const def = protoLoader.loadSync(protoPath, { keepCase: true, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } } };
    this.client = new pkg.grpc.reflection.v1.ServerReflection(address, grpc.credentials.createInsecure()) as never;
  }

  private ask(request: Record<string, string>): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const call = this.client["ServerReflectionInfo"]!();
      call.on("data", (res: Record<string, unknown>) => {
        resolve(res);
        call.end();
      });
      call.on("error", reject);
      call.write({ host: "", ...request });
    });
  }

  async listServices(): Promise<string[]> {
    const res = await this.ask({ list_services: "" });
    return (res["list_services_response"] as { service: { name: string }[] }).service.map((s) => s.name);
  }

  /** Every file that defines `symbol`, with its imports, as a package definition. */
  async packageFor(symbol: string): Promise<grpc.GrpcObject> {
    const files = new Map<string, Uint8Array>();
    const add = (res: Record<string, unknown>) => {
      for (const bytes of (res["file_descriptor_response"] as { file_descriptor_proto: Uint8Array[] }).file_descriptor_proto) {
        const fd = descriptor.FileDescriptorProto.decode(bytes) as unknown as { name: string; dependency: string[] };
        files.set(fd.name, bytes);
      }
    };
    add(await this.ask({ file_containing_symbol: symbol }));
    for (;;) {
      const missing = [...files.values()]
        .flatMap((b) => (descriptor.FileDescriptorProto.decode(b) as unknown as { dependency: string[] }).dependency)
        .find((d) => !files.has(d));
      if (missing === undefined) break;
      add(await this.ask({ file_by_filename: missing }));
    }
    // A FileDescriptorSet is its files as repeated field 1.
    const parts: Buffer[] = [];
    for (const bytes of files.values()) {
      const len: number[] = [];
      let n = bytes.length;
      while (n > 127) {
        len.push((n & 0x7f) | 0x80);
        n >>>= 7;
      }
      len.push(n);
      parts.push(Buffer.from([0x0a, ...len]), Buffer.from(bytes));
    }
    const def = protoLoader.loadFileDescriptorSetFromBuffer(Buffer.concat(parts), { keepCase: true, defaults: true, longs: String, enums: String });
    return grpc.loadPackageDefinition(def);
  }

  close(): void {
    this.client.close();
  }
}
