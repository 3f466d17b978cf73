import net from "node:net";
import { describe, expect, it } from "vitest";
import { freePort, startTestPlatform } from "@lathe/testing";
import { gatewayOptionsOf, gatewayService } from "../src/index.js";

/** A TCP server holding `port` on 127.0.0.1, or null when something else already holds it. */
async function hold(port: number): Promise<net.Server | null> {
  const s = net.createServer();
  return new Promise((resolve) => {
    s.once("error", () => resolve(null));
    s.listen(port, "127.0.0.1", () => resolve(s));
  });
}

describe("where the OpenAI-compatible HTTP API listens", () => {
  it("next to the gRPC port by default, on a free port when that one is taken; a port given is kept or refused", async () => {
    let grpc = 0;
    let blocker: net.Server | null = null;
    for (let i = 0; i < 20 && blocker === null; i++) {
      grpc = await freePort();
      blocker = grpc < 65535 ? await hold(grpc + 1) : null;
    }
    expect(blocker).not.toBeNull();
    try {
      let url = "";
      const options = gatewayOptionsOf({} as never);
      const t = await startTestPlatform({ memoryBus: true, env: { LATHE_GRPC_PORT: String(grpc) }, factories: [gatewayService(options, { onHttpListening: (u) => (url = u) })] });
      try {
        expect(t.address).toBe(`127.0.0.1:${grpc}`);
        const port = Number(new URL(url).port);
        expect(port).not.toBe(grpc + 1);
        expect((await fetch(`${url}/healthz`)).status).toBe(200);
      } finally {
        await t.stop();
      }
      // Asked for explicitly, a taken port is an error, not silently another.
      await expect(startTestPlatform({ memoryBus: true, factories: [gatewayService({ ...options, LATHE_GATEWAY_HTTP_PORT: grpc + 1 })] })).rejects.toThrow(/EADDRINUSE/);
    } finally {
      blocker!.close();
    }
  });
});
