import { Metadata, status } from "@grpc/grpc-js";
import { writeFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { AppError, asAppError, errorCodeTable, errorTrailers, fromGrpcError, invalidArgument, isRetryable, notFound, retryableCodes, toGrpcError, type ErrorCode } from "./errors.js";

/** What a grpc-js client receives for a status the server sent. */
function asReceived(sent: ReturnType<typeof toGrpcError>): Error & { code: number; details: string; metadata: Metadata } {
  return Object.assign(new Error(`${sent.code} ${status[sent.code]}: ${sent.details}`), sent);
}

describe("toGrpcError / fromGrpcError", () => {
  it("round-trips code, reason, field and metadata", () => {
    const sent = toGrpcError(invalidArgument("model.display_name", "is 300 characters long; the limit is 200", "DISPLAY_NAME_TOO_LONG"));
    expect(sent.code).toBe(status.INVALID_ARGUMENT);
    expect(sent.details).toBe("model.display_name: is 300 characters long; the limit is 200");
    expect(sent.metadata.get(errorTrailers.reason)).toEqual(["DISPLAY_NAME_TOO_LONG"]);
    expect(sent.metadata.get(errorTrailers.field)).toEqual(["model.display_name"]);

    const back = fromGrpcError(asReceived(sent));
    expect(back).toBeInstanceOf(AppError);
    expect(back.code).toBe("INVALID_ARGUMENT");
    expect(back.reason).toBe("DISPLAY_NAME_TOO_LONG");
    expect(back.field).toBe("model.display_name");
    expect(back.message).toBe("model.display_name: is 300 characters long; the limit is 200");
  });

  it.each([
    ["NOT_FOUND", status.NOT_FOUND],
    ["ALREADY_EXISTS", status.ALREADY_EXISTS],
    ["UNAUTHENTICATED", status.UNAUTHENTICATED],
    ["UNAVAILABLE", status.UNAVAILABLE],
    ["ABORTED", status.ABORTED],
  ] as const)("maps %s to its gRPC status and back", (code, grpcCode) => {
    const sent = toGrpcError(new AppError(code, `SOME_${code}`, "m", { name: "models/x" }));
    expect(sent.code).toBe(grpcCode);
    const back = fromGrpcError(asReceived(sent));
    expect([back.code, back.reason, back.metadata]).toEqual([code, `SOME_${code}`, { name: "models/x" }]);
  });

  it("keeps the metadata of an error about a name with non-ASCII characters", () => {
    const err = notFound("model", "models/café");
    const sent = toGrpcError(err);
    const back = fromGrpcError(asReceived(sent));
    expect([back.code, back.reason, back.metadata["name"]]).toEqual(["NOT_FOUND", "MODEL_NOT_FOUND", "models/café"]);
  });

  it("keeps the field of an error about a field with non-ASCII characters", () => {
    const back = fromGrpcError(asReceived(toGrpcError(invalidArgument("model.labels.ключ", "bad label key"))));
    expect([back.code, back.field]).toEqual(["INVALID_ARGUMENT", "model.labels.ключ"]);
  });

  it("turns an unknown error into INTERNAL without its message", () => {
    const sent = toGrpcError(new Error("password=hunter2 at db.internal:5432"));
    expect(sent.code).toBe(status.INTERNAL);
    expect(sent.details).toBe("internal error");
    expect(sent.metadata.get(errorTrailers.reason)).toEqual(["INTERNAL"]);
    expect(JSON.stringify(sent.metadata.getMap())).not.toContain("hunter2");
    expect(toGrpcError("a string").details).toBe("internal error");
    expect(toGrpcError(undefined).code).toBe(status.INTERNAL);
  });

  it("reads a status without kit trailers as its code, with the code as reason", () => {
    const plain = Object.assign(new Error("14 UNAVAILABLE: No connection established"), {
      code: status.UNAVAILABLE,
      details: "No connection established",
      metadata: new Metadata(),
    });
    const app = asAppError(plain);
    expect([app.code, app.reason, app.message]).toEqual(["UNAVAILABLE", "UNAVAILABLE", "No connection established"]);
  });

  it("passes an AppError through asAppError unchanged", () => {
    const err = new AppError("FAILED_PRECONDITION", "JOB_RUNNING", "the job is running");
    expect(asAppError(err)).toBe(err);
  });

  it("turns a full disk, however it was met, into RESOURCE_EXHAUSTED DISK_FULL", async () => {
    // /dev/full answers every write with ENOSPC, as a full disk does.
    const enospc = await writeFile("/dev/full", "x").then(() => undefined, (e: unknown) => e);
    expect((enospc as NodeJS.ErrnoException).code).toBe("ENOSPC");
    const quota = Object.assign(new Error("EDQUOT: disk quota exceeded, write"), { code: "EDQUOT", errno: -122, syscall: "write" });
    const pgFull = Object.assign(new Error("could not extend file: No space left on device"), { code: "53100", severity: "ERROR" });
    const wrapped = new Error("import failed", { cause: enospc });
    for (const err of [enospc, quota, pgFull, wrapped]) {
      const app = asAppError(err);
      expect([app.code, app.reason]).toEqual(["RESOURCE_EXHAUSTED", "DISK_FULL"]);
      expect(app.message).toMatch(/^the server's disk is full: /);
      expect(toGrpcError(err).code).toBe(status.RESOURCE_EXHAUSTED);
    }
  });
});

describe("isRetryable", () => {
  it("says yes for exactly retryableCodes, no for every other code", () => {
    // Every code the kit knows; a retry can help only where the server was busy or a race was lost.
    const codes = Object.keys(errorCodeTable) as ErrorCode[];
    expect(codes.filter((c) => isRetryable(new AppError(c, c, "x"))).sort()).toEqual(["ABORTED", "RESOURCE_EXHAUSTED", "UNAVAILABLE"]);
    expect([...retryableCodes].sort()).toEqual(["ABORTED", "RESOURCE_EXHAUSTED", "UNAVAILABLE"]);
    expect(isRetryable(new AppError("INTERNAL", "ARTIFACT_CORRUPTED", "x"))).toBe(false);
  });

  it("reads other thrown values as asAppError does: unknown errors are INTERNAL, a full disk may pass", () => {
    expect(isRetryable(new Error("boom"))).toBe(false);
    expect(isRetryable("boom")).toBe(false);
    expect(isRetryable(Object.assign(new Error("ENOSPC"), { code: "ENOSPC" }))).toBe(true);
    const unavailable = Object.assign(new Error("14 UNAVAILABLE: no connection"), { code: status.UNAVAILABLE, details: "no connection", metadata: new Metadata() });
    expect(isRetryable(unavailable)).toBe(true);
  });
});
