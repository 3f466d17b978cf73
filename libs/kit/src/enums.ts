import { LearningRateScheduler } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { ChatRole } from "@lathe/proto/lathe/type/v1/chat";
import { FineTuningMethod } from "@lathe/proto/lathe/type/v1/lora";

/**
 * One proto enum and the lowercase names the rest of the code uses for its values (the chat
 * template's roles, the engine's settings, the CLI's flags), both ways, written once.
 */
export interface EnumCodec<E extends number, N extends string> {
  /** The names, in the order the codec was given them. */
  readonly names: readonly N[];
  /**
   * The name of an enum value; for the UNSPECIFIED value 0, the name it stands for when the codec
   * has one; undefined for any other value (UNRECOGNIZED, or one this codec does not name).
   */
  name(value: number): N | undefined;
  /** The enum value of a name, undefined for anything else. */
  value(name: string): E | undefined;
  /** The name of an enum value given by its proto identifier (`FINE_TUNING_METHOD_QLORA`), as filters spell it; UNSPECIFIED has none. */
  nameOfIdentifier(identifier: string): N | undefined;
}

type EnumObject = Record<string, string | number>;
type NameOf<M> = Extract<M[keyof M], string>;

/**
 * A codec for a ts-proto enum: `names` maps the enum's identifiers to names; `unspecified` is the
 * name the UNSPECIFIED value (0) means, when the API gives it a default.
 */
export function enumCodec<T extends EnumObject, const M extends { readonly [K in keyof T]?: string }>(
  enumObject: T,
  names: M,
  opts: { unspecified?: NameOf<M> } = {},
): EnumCodec<Extract<T[keyof T], number>, NameOf<M>> {
  type E = Extract<T[keyof T], number>;
  type N = NameOf<M>;
  const byValue = new Map<number, N>();
  const byName = new Map<string, E>();
  const byIdentifier = new Map<string, N>();
  for (const [identifier, name] of Object.entries(names) as [string, N | undefined][]) {
    const value = enumObject[identifier];
    if (typeof value !== "number" || name === undefined) throw new Error(`${identifier} is not a value of this enum`);
    if (byName.has(name)) throw new Error(`the name ${name} is given twice`);
    byValue.set(value, name);
    byName.set(name, value as E);
    byIdentifier.set(identifier, name);
  }
  const unspecified = opts.unspecified;
  return {
    names: [...byName.keys()] as N[],
    name: (value) => byValue.get(value) ?? (value === 0 ? unspecified : undefined),
    value: (name) => byName.get(name),
    nameOfIdentifier: (identifier) => byIdentifier.get(identifier),
  };
}

/** Chat roles as chat templates and JSONL rows name them. */
export const chatRoles = enumCodec(ChatRole, { CHAT_ROLE_SYSTEM: "system", CHAT_ROLE_USER: "user", CHAT_ROLE_ASSISTANT: "assistant" });

/** Learning-rate schedules as the engine and the CLI name them; unset means cosine. */
export const lrSchedulers = enumCodec(
  LearningRateScheduler,
  { LEARNING_RATE_SCHEDULER_COSINE: "cosine", LEARNING_RATE_SCHEDULER_LINEAR: "linear", LEARNING_RATE_SCHEDULER_CONSTANT: "constant" },
  { unspecified: "cosine" },
);

/** Fine-tuning methods as the trainer names them; unset means LoRA. */
export const fineTuningMethods = enumCodec(FineTuningMethod, { FINE_TUNING_METHOD_LORA: "lora", FINE_TUNING_METHOD_QLORA: "qlora" }, { unspecified: "lora" });
