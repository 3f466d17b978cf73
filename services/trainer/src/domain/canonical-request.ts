import { CreateFineTuningJobRequest } from "@lathe/proto/lathe/trainer/v1/trainer_service";

/**
 * Fields of FineTuningJob that the server sets. The API says a request's values for them are
 * ignored, so a retry may differ there and still be the same request.
 */
const SERVER_SET = ["name", "create_time", "update_time", "start_time", "end_time", "state", "estimate", "progress", "result", "error", "attempt_count", "worker", "adapter_version", "evaluation_run", "cancel_reason"];

/** Map fields whose keys are the caller's data, not field names: left as they are. */
const MAPS = new Set(["labels"]);

const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function snakeKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(snakeKeys);
  if (v === null || typeof v !== "object") return v;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [snake(k), MAPS.has(k) ? x : snakeKeys(x)]));
}

/**
 * A CreateFineTuningJob request as kept with the job it made, to tell a retry (the same request)
 * from a reuse of its `request_id` for another one (AIP-155): proto JSON with the API's
 * snake_case names (so a difference names the field the caller wrote), default values left out
 * (so `r: 0` and no `r` are the same, as on the wire), and neither the id itself nor the fields
 * the server sets.
 */
export function canonicalCreateRequest(req: CreateFineTuningJobRequest): Record<string, unknown> {
  const json = snakeKeys(CreateFineTuningJobRequest.toJSON({ ...req, requestId: "" })) as Record<string, unknown>;
  const job = { ...((json["fine_tuning_job"] ?? {}) as Record<string, unknown>) };
  for (const k of SERVER_SET) delete job[k];
  return { fine_tuning_job_id: req.fineTuningJobId, fine_tuning_job: job };
}
