import { expect, test } from "vitest";
import { boundaryOf, parseMultipart } from "./multipart.js";

test("a multipart/form-data body as fetch's FormData writes it: fields and a file with its name and bytes", async () => {
  const form = new FormData();
  form.append("purpose", "fine-tune");
  const bytes = Buffer.from('{"a":1}\r\n--not-a-boundary\n{"b":2}');
  form.append("file", new Blob([bytes]), "train.jsonl");
  const req = new Request("http://x/", { method: "POST", body: form });
  const body = Buffer.from(await req.arrayBuffer());
  const parts = parseMultipart(body, boundaryOf(req.headers.get("content-type") ?? undefined));
  expect(parts.map((p) => [p.name, p.filename])).toEqual([
    ["purpose", undefined],
    ["file", "train.jsonl"],
  ]);
  expect(parts[0]!.data.toString()).toBe("fine-tune");
  expect(parts[1]!.data.equals(bytes)).toBe(true);
});

test("a body that is not multipart, or is cut short, is a 400", () => {
  expect(() => boundaryOf("application/json")).toThrow(/multipart\/form-data/);
  expect(() => parseMultipart(Buffer.from('--b\r\nContent-Disposition: form-data; name="x"\r\n\r\nvalue'), "b")).toThrow(/malformed/);
});
