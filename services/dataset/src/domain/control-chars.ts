import { invalidArgument } from "@lathe/kit";
import { forbiddenCharProblem } from "@lathe/models";

// The forbidden characters (what no stored text may hold, and why) are @lathe/models' rule, the
// one rows are parsed with; this file holds only the dataset's refusal of request fields.

/** `value` of a request field, refused (INVALID_ARGUMENT on `field`) when it holds a forbidden character. */
export function checkCleanText(field: string, value: string): string {
  const bad = forbiddenCharProblem("", value);
  if (bad) throw invalidArgument(field, bad);
  return value;
}

/** Labels whose values hold no forbidden character (keys are checked by the kit's label rules). */
export function checkCleanLabels(field: string, labels: Record<string, string>): Record<string, string> {
  for (const [k, v] of Object.entries(labels)) checkCleanText(`${field}.${k}`, v);
  return labels;
}
