import { Option, type Command } from "commander";
import { RECIPE, RECIPE_KEYS, RecipeError, resolveRecipe, settingHelp, type Recipe, type RecipeKey } from "@lathe/models";
import { list, nonNegativeInt, number, positiveInt } from "./flags.js";

/*
 * The flags of the training recipe, shared by `lathe train` and `lathe jobs create|estimate`:
 * names, ranges, defaults and help all come from libs/models' recipe, so both commands say and
 * do the same. No flag has a commander default: one left out stays undefined, and the recipe's
 * default applies where the settings are resolved (here for `lathe train`, in the trainer for a
 * job).
 */

const camel = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** A value in the setting's range, or an error naming the flag and the value. */
function inRange(key: RecipeKey, raw: string, value: unknown): unknown {
  try {
    return resolveRecipe({ [key]: value })[key];
  } catch (err) {
    if (err instanceof RecipeError) throw new Error(`--${RECIPE[key].flag} ${raw}: ${err.reason}`);
    throw err;
  }
}

function parserOf(key: RecipeKey): (v: string) => unknown {
  const s = RECIPE[key];
  switch (s.kind) {
    case "int": {
      const int = s.min >= 1 ? positiveInt(s.flag) : nonNegativeInt(s.flag);
      return (v) => inRange(key, v, int(v));
    }
    case "float":
      return (v) => inRange(key, v, number(s.flag, () => true, "a number")(v));
    default:
      return (v) => inRange(key, v, s.kind === "modules" ? list(v) : v);
  }
}

/** Adds the flags of `keys` (every setting by default) to `cmd`; `--X` and `--no-X` for switches. */
export function addRecipeFlags(cmd: Command, keys: readonly RecipeKey[] = RECIPE_KEYS): Command {
  for (const key of keys) {
    const s = RECIPE[key];
    const help = settingHelp(key);
    switch (s.kind) {
      case "bool":
        cmd.option(`--${s.flag}`, help).option(`--no-${s.flag}`, s.off);
        break;
      case "choice":
        cmd.addOption(new Option(`--${s.flag} <name>`, help).choices([...s.choices]));
        break;
      case "modules":
        cmd.option(`--${s.flag} <list>`, help, parserOf(key));
        break;
      default:
        cmd.option(`--${s.flag} <${s.kind === "int" ? "n" : "x"}>`, help, parserOf(key));
    }
  }
  return cmd;
}

/** The settings the flags gave (parsed and in range); those left out are absent. */
export function recipeFlags(opts: Record<string, unknown>, keys: readonly RecipeKey[] = RECIPE_KEYS): Partial<Recipe> {
  const out: Record<string, unknown> = {};
  for (const key of keys) {
    const v = opts[camel(RECIPE[key].flag)];
    if (v !== undefined) out[key] = v;
  }
  return out as Partial<Recipe>;
}

/**
 * The inverse of {@link recipeFlags}: the values the flags would parse to for `settings`, under
 * the names commander gives them, for calling a command's function without its parser.
 */
export function recipeFlagValues(settings: Partial<Recipe>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(settings).map(([key, v]) => [camel(RECIPE[key as RecipeKey].flag), v]));
}

/** `settings` as the flags a person would type, in their order: `--epochs 6 --no-packing …`. */
export function recipeFlagsText(settings: Partial<Recipe>): string {
  return Object.entries(settings)
    .map(([key, v]) => {
      const flag = RECIPE[key as RecipeKey].flag;
      if (typeof v === "boolean") return v ? `--${flag}` : `--no-${flag}`;
      return `--${flag} ${Array.isArray(v) ? v.join(",") : String(v)}`;
    })
    .join(" ");
}
