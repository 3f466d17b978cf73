import { LearningRateScheduler } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { ChatRole } from "@lathe/proto/lathe/type/v1/chat";
import { FineTuningMethod } from "@lathe/proto/lathe/type/v1/lora";
import { describe, expect, it } from "vitest";
import { chatRoles, enumCodec, fineTuningMethods, lrSchedulers } from "./enums.js";

describe("enum codecs", () => {
  it("name chat roles both ways, and leave UNSPECIFIED and UNRECOGNIZED unnamed", () => {
    expect(chatRoles.names).toEqual(["system", "user", "assistant"]);
    expect([ChatRole.CHAT_ROLE_SYSTEM, ChatRole.CHAT_ROLE_USER, ChatRole.CHAT_ROLE_ASSISTANT].map((r) => chatRoles.name(r))).toEqual(["system", "user", "assistant"]);
    for (const n of chatRoles.names) expect(chatRoles.name(chatRoles.value(n)!)).toBe(n);
    expect(chatRoles.name(ChatRole.CHAT_ROLE_UNSPECIFIED)).toBeUndefined();
    expect(chatRoles.name(ChatRole.UNRECOGNIZED)).toBeUndefined();
    expect(chatRoles.value("tool")).toBeUndefined();
    expect(chatRoles.value("User")).toBeUndefined();
  });

  it("read UNSPECIFIED as the API's default, but never write it", () => {
    expect(lrSchedulers.name(LearningRateScheduler.LEARNING_RATE_SCHEDULER_UNSPECIFIED)).toBe("cosine");
    expect(lrSchedulers.value("cosine")).toBe(LearningRateScheduler.LEARNING_RATE_SCHEDULER_COSINE);
    expect(lrSchedulers.name(LearningRateScheduler.LEARNING_RATE_SCHEDULER_CONSTANT)).toBe("constant");
    expect(lrSchedulers.name(99)).toBeUndefined();
    expect(fineTuningMethods.name(FineTuningMethod.FINE_TUNING_METHOD_UNSPECIFIED)).toBe("lora");
    expect(fineTuningMethods.value("qlora")).toBe(FineTuningMethod.FINE_TUNING_METHOD_QLORA);
    expect(fineTuningMethods.value("lora")).toBe(FineTuningMethod.FINE_TUNING_METHOD_LORA);
  });

  it("read proto identifiers, UNSPECIFIED and unknown ones not at all", () => {
    expect(fineTuningMethods.nameOfIdentifier("FINE_TUNING_METHOD_QLORA")).toBe("qlora");
    expect(fineTuningMethods.nameOfIdentifier("FINE_TUNING_METHOD_UNSPECIFIED")).toBeUndefined();
    expect(fineTuningMethods.nameOfIdentifier("qlora")).toBeUndefined();
    expect(fineTuningMethods.nameOfIdentifier("toString")).toBeUndefined();
  });

  it("refuses a table that names a value twice or names no value", () => {
    expect(() => enumCodec(ChatRole, { CHAT_ROLE_USER: "x", CHAT_ROLE_ASSISTANT: "x" })).toThrow(/twice/);
    expect(() => enumCodec(ChatRole, { NOT_A_ROLE: "x" } as never)).toThrow(/not a value/);
  });
});
