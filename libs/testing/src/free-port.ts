import { createServer } from "node:net";

/**
 * A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it; we release it at once).
 * Another process could take it before the caller binds it, which is unlikely enough for tests.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      if (address === null || typeof address === "string") {
        server.close();
        reject(new Error("freePort: the server has no TCP address"));
        return;
      }
      server.close((err) => (err ? reject(err) : resolve(address.port)));
    });
  });
}
