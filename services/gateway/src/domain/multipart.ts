import { badRequest } from "./errors.js";

/** One part of a `multipart/form-data` body: a field's value, or a file with its name. */
export interface FormPart {
  name: string;
  filename: string | undefined;
  data: Buffer;
}

/** The boundary of a `multipart/form-data` content type, or a 400 naming what is wrong. */
export function boundaryOf(contentType: string | undefined): string {
  const m = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType ?? "");
  const b = m?.[1] ?? m?.[2];
  if (!contentType?.toLowerCase().startsWith("multipart/form-data") || b === undefined) {
    throw badRequest("Upload a file as multipart/form-data with the fields 'file' and 'purpose'.", null, "invalid_content_type");
  }
  return b;
}

function dispositionOf(headers: string): { name: string; filename: string | undefined } | undefined {
  for (const line of headers.split("\r\n")) {
    const [key, ...rest] = line.split(":");
    if (key?.trim().toLowerCase() !== "content-disposition") continue;
    const value = rest.join(":");
    const name = /\bname="([^"]*)"/i.exec(value)?.[1];
    const filename = /\bfilename="([^"]*)"/i.exec(value)?.[1];
    if (name !== undefined) return { name, filename };
  }
  return undefined;
}

/**
 * The parts of a `multipart/form-data` body (RFC 7578) held in memory: what OpenAI clients send
 * to `POST /v1/files`. A body that does not follow the format is a 400.
 */
export function parseMultipart(body: Buffer, boundary: string): FormPart[] {
  const delimiter = Buffer.from(`--${boundary}`);
  const malformed = () => badRequest("The multipart/form-data body is malformed: a part or its closing boundary is missing.", null, "invalid_multipart");
  let at = body.indexOf(delimiter);
  if (at < 0) throw malformed();
  const parts: FormPart[] = [];
  for (;;) {
    at += delimiter.length;
    // `--` after a delimiter closes the body.
    if (body[at] === 0x2d && body[at + 1] === 0x2d) return parts;
    if (body[at] !== 0x0d || body[at + 1] !== 0x0a) throw malformed();
    const headersEnd = body.indexOf("\r\n\r\n", at + 2);
    if (headersEnd < 0) throw malformed();
    const next = body.indexOf(Buffer.concat([Buffer.from("\r\n"), delimiter]), headersEnd + 4);
    if (next < 0) throw malformed();
    const d = dispositionOf(body.subarray(at + 2, headersEnd).toString("utf8"));
    if (d !== undefined) parts.push({ ...d, data: body.subarray(headersEnd + 4, next) });
    at = next + 2;
  }
}
