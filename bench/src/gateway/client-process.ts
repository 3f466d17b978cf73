/**
 * The HTTP client of bench/gateway in a process of its own, so that reading the stream costs the
 * gateway's process nothing, as with a remote client. Commands and answers are JSON lines on
 * stdin and stdout; times are taken here.
 */
import { createInterface } from "node:readline";
import { postJson, streamChat } from "./stream-chat.js";
import type { ClientCommand, ClientAnswer } from "./child-client.js";

for await (const line of createInterface({ input: process.stdin })) {
  const c = JSON.parse(line) as ClientCommand;
  let answer: ClientAnswer;
  try {
    if (c.kind === "stream") {
      answer = { id: c.id, stream: await streamChat(c.url, c.apiKey, c.body, "http") };
    } else {
      const start = performance.now();
      const res = await postJson(c.url, c.apiKey, c.body, "http");
      answer = { id: c.id, post: { ...res, ms: performance.now() - start } };
    }
  } catch (err) {
    answer = { id: c.id, error: err instanceof Error ? err.message : String(err) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
// Keep-alive sockets would hold the process open.
process.exit(0);
