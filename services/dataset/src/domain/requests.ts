import {
  CreateDatasetRequest,
  DeriveDatasetVersionRequest,
  UploadDatasetVersionHeader,
} from "@lathe/proto/lathe/dataset/v1/dataset_service";

/**
 * The canonical form of a request that carries a `request_id` (AIP-155): its proto JSON with the
 * proto's own snake_case field names, default values left out and the request id itself dropped.
 * It is stored with what the request made, so a retry can be compared with it field by field and
 * a reused id named by the first field that differs (`checkSameRequest` in the kit).
 */
export type CanonicalRequest = Record<string, unknown>;

// Map fields keep their keys as the caller wrote them: they are data, not field names.
const mapFields = new Set(["labels"]);

function snake(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(snake);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => {
      const name = k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      return [name, mapFields.has(name) ? v : snake(v)];
    }),
  );
}

function canonical(json: unknown): CanonicalRequest {
  const { request_id: _dropped, ...rest } = snake(json) as CanonicalRequest;
  return rest;
}

export function createDatasetRequest(req: CreateDatasetRequest): CanonicalRequest {
  return canonical(CreateDatasetRequest.toJSON(req));
}

/**
 * An upload's header, and once the bytes are in, `content`: the sha256 of the file, so a retry
 * with another file under the same id is told that `content` differs.
 */
export function uploadRequest(header: UploadDatasetVersionHeader, contentDigest?: string): CanonicalRequest {
  const out = canonical(UploadDatasetVersionHeader.toJSON(header));
  return contentDigest === undefined ? out : { ...out, content: contentDigest };
}

export function deriveRequest(req: DeriveDatasetVersionRequest): CanonicalRequest {
  return canonical(DeriveDatasetVersionRequest.toJSON(req));
}
