import { AppError } from "@lathe/kit";

export type OpenAiErrorType = "invalid_request_error" | "authentication_error" | "permission_error" | "not_found_error" | "rate_limit_error" | "server_error";

/** An error answered in OpenAI's shape, `{"error":{"message","type","param","code"}}`, with OpenAI's HTTP status. */
export class OpenAiError extends Error {
  override readonly name = "OpenAiError";
  constructor(
    readonly status: number,
    readonly type: OpenAiErrorType,
    message: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
    /** Seconds, for a 429. */
    readonly retryAfterS?: number,
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = null): OpenAiError => new OpenAiError(400, "invalid_request_error", message, code, param);

export const modelNotFound = (model: string): OpenAiError =>
  new OpenAiError(404, "invalid_request_error", `The model \`${model}\` does not exist or you do not have access to it.`, "model_not_found", "model");

/** OpenAI's error for an error of the gateway or of a service it called. */
export function toOpenAiError(err: unknown): OpenAiError {
  if (err instanceof OpenAiError) return err;
  if (err instanceof AppError) {
    switch (err.code) {
      case "INVALID_ARGUMENT":
      case "FAILED_PRECONDITION":
      case "OUT_OF_RANGE":
        return badRequest(err.message, err.field ?? null, err.reason.toLowerCase());
      case "UNAUTHENTICATED":
        return new OpenAiError(401, "authentication_error", err.message, "invalid_api_key");
      case "PERMISSION_DENIED":
        return new OpenAiError(403, "permission_error", err.message);
      case "NOT_FOUND":
        return new OpenAiError(404, "invalid_request_error", err.message, "not_found");
      case "RESOURCE_EXHAUSTED":
        return new OpenAiError(429, "rate_limit_error", err.message, "rate_limit_exceeded");
      case "UNAVAILABLE":
        return new OpenAiError(503, "server_error", err.message, "unavailable");
      default:
        break;
    }
  }
  return new OpenAiError(500, "server_error", "The server had an error while processing your request.", "internal_error");
}
