import { OpenAiError } from "./errors.js";
import type { ResolvedModel } from "./registry.js";

/**
 * Refuses a chat with an adapter trained with another chat template than the one the gateway
 * renders prompts with (the base model's): the adapter learned answers after other markers, and
 * its output would be garbled. An adapter whose fingerprint was not recorded passes; so does the
 * bare base. `applied` is the fingerprint of the template in use, "" when the base has none.
 * @throws OpenAiError 400 `chat_template_mismatch`
 */
export function checkChatTemplate(m: ResolvedModel, applied: string): void {
  const trained = m.adapter?.chatTemplateFingerprint ?? "";
  if (trained === "" || trained === applied) return;
  throw new OpenAiError(
    400,
    "invalid_request_error",
    `The adapter ${m.adapter!.version} was trained with another chat template (${trained}) than the one this gateway applies for \`${m.id}\` ` +
      `(${applied === "" ? "none: the base model has no chat template" : applied}); its answers would be garbled. ` +
      "Serve it over a base model with the template it was trained with, or register it again with that template.",
    "chat_template_mismatch",
    "model",
  );
}
