import type { Transaction } from "kysely";
import { describe, expectTypeOf, it } from "vitest";
import type { EventConsumer } from "./consumer.js";

interface Tables {
  things: { id: string; seq: number };
}

describe("EventConsumer's types", () => {
  it("gives handlers a transaction of the service's own tables", () => {
    type Handle = Parameters<EventConsumer<Tables>["on"]>[1];
    expectTypeOf<Parameters<Handle>[1]["trx"]>().toEqualTypeOf<Transaction<Tables>>();
    expectTypeOf<Parameters<Handle>[1]["trx"]>().not.toEqualTypeOf<Transaction<{ other: { id: string } }>>();
  });
});
