import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { postJson, streamChat, type StreamedChat } from "./stream-chat.js";

export type ClientCommand = { id: number; kind: "stream" | "post"; url: string; apiKey: string; body: Record<string, unknown> };
export type ClientAnswer = { id: number; stream?: StreamedChat; post?: { status: number; text: string; ms: number }; error?: string };

/** Where the requests of the benchmark are made: in this process, or in a child process. */
export interface BenchClient {
  /** A streaming chat completion and its times. */
  stream(url: string, apiKey: string, body: Record<string, unknown>): Promise<StreamedChat>;
  /** A POST of JSON, its answer, and how long it took (measured where it was sent). */
  post(url: string, apiKey: string, body: Record<string, unknown>): Promise<{ status: number; text: string; ms: number }>;
  close(): Promise<void>;
}

/** `child`: node:http in a process of its own (a remote client's cost); `inline`: node:http here; `fetch`: fetch here. */
export type ClientMode = "child" | "inline" | "fetch";

export function benchClient(mode: ClientMode): BenchClient {
  if (mode === "child") return new ChildClient();
  const kind = mode === "fetch" ? "fetch" : "http";
  return {
    stream: (url, apiKey, body) => streamChat(url, apiKey, body, kind),
    async post(url, apiKey, body) {
      const start = performance.now();
      const res = await postJson(url, apiKey, body, kind);
      return { ...res, ms: performance.now() - start };
    },
    close: async () => {},
  };
}

class ChildClient implements BenchClient {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, { resolve(a: ClientAnswer): void; reject(e: Error): void }>();
  private next = 0;

  constructor() {
    this.child = spawn(process.execPath, [fileURLToPath(new URL("./client-process.js", import.meta.url))], { stdio: ["pipe", "pipe", "inherit"] });
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      const a = JSON.parse(line) as ClientAnswer;
      this.pending.get(a.id)?.resolve(a);
      this.pending.delete(a.id);
    });
    this.child.on("exit", (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`the client process exited with ${code}`));
      this.pending.clear();
    });
  }

  private async ask(kind: ClientCommand["kind"], url: string, apiKey: string, body: Record<string, unknown>): Promise<ClientAnswer> {
    const id = this.next++;
    const answer = new Promise<ClientAnswer>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.child.stdin!.write(`${JSON.stringify({ id, kind, url, apiKey, body } satisfies ClientCommand)}\n`);
    const a = await answer;
    if (a.error !== undefined) throw new Error(a.error);
    return a;
  }

  async stream(url: string, apiKey: string, body: Record<string, unknown>): Promise<StreamedChat> {
    return (await this.ask("stream", url, apiKey, body)).stream!;
  }

  async post(url: string, apiKey: string, body: Record<string, unknown>): Promise<{ status: number; text: string; ms: number }> {
    return (await this.ask("post", url, apiKey, body)).post!;
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.stdin!.end();
    await exited;
  }
}
