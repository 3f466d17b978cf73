import { chatRoles, checkLabels, checkText, invalidArgument, parseName, parseNestedName, checkSecretRef, type Prices } from "@lathe/kit";
import type { GenerationJob } from "@lathe/proto/lathe/synthgen/v1/synthgen_service";
import { CheckOptions } from "@lathe/proto/lathe/type/v1/data_check";
import type { ChatExample } from "@lathe/proto/lathe/type/v1/chat";
import type { JobSpec, Turn } from "../db/migrations.js";

/** The seed recipe's teacher defaults: temperature 0.9 for diversity. */
export const DEFAULT_GENERATION = { temperature: 0.9, topP: 1, maxTokens: 2048 };
const jobIdPattern = /^[a-z][a-z0-9-]{0,62}$/;

export function checkJobId(field: string, id: string): string {
  if (!jobIdPattern.test(id)) throw invalidArgument(field, `${JSON.stringify(id.slice(0, 80))} must be 1 to 63 characters of lowercase letters, digits and '-', starting with a letter`);
  return id;
}

export const parseJobName = (field: string, name: string): string => checkJobId(field, parseName(field, name, "generationJobs"));

/** A ChatExample as turns, checked: at least a user and an assistant message, every role known, no empty content. */
export function turnsOf(field: string, e: ChatExample | undefined): Turn[] {
  if (!e || e.messages.length < 2) throw invalidArgument(field, "needs at least a user and an assistant message");
  if (e.messages.length > 256) throw invalidArgument(field, `has ${e.messages.length} messages; the limit is 256`);
  const turns = e.messages.map((m, i) => {
    const role = chatRoles.name(m.role);
    if (role === undefined) throw invalidArgument(`${field}.messages[${i}].role`, "must be system, user or assistant");
    if (m.content.trim() === "") throw invalidArgument(`${field}.messages[${i}].content`, "is empty");
    return { role, content: m.content };
  });
  if (turns.at(-1)!.role !== "assistant") throw invalidArgument(field, "must end with an assistant message");
  return turns;
}

/** The price of a teacher model, when one is configured. */
export const priceOf = (prices: Prices | undefined, model: string) => prices?.[model];

/** A job's spec as the caller wrote it, checked, with defaults applied. */
export function jobSpecOf(j: GenerationJob | undefined, prices: Prices | undefined): JobSpec {
  if (!j) throw invalidArgument("generation_job", "is required");
  const f = (n: string) => `generation_job.${n}`;
  const t = j.teacher;
  if (!t) throw invalidArgument(f("teacher"), "is required");
  let url: URL;
  try {
    url = new URL(t.baseUrl);
  } catch {
    throw invalidArgument(f("teacher.base_url"), t.baseUrl === "" ? "is required" : `${JSON.stringify(t.baseUrl.slice(0, 200))} is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw invalidArgument(f("teacher.base_url"), "must be an http or https URL");
  if (url.username !== "" || url.password !== "") throw invalidArgument(f("teacher.base_url"), "must not hold credentials; name the key in api_key_secret");
  if (t.model.trim() === "") throw invalidArgument(f("teacher.model"), "is required");
  checkText(f("teacher.model"), t.model, 256);
  checkSecretRef(f("teacher.api_key_secret"), t.apiKeySecret);
  if (t.maxConcurrentRequests < 0 || t.maxConcurrentRequests > 64) throw invalidArgument(f("teacher.max_concurrent_requests"), "must be from 1 to 64 (0 for the default, 4)");
  if (t.requestsPerMinute < 0 || t.requestsPerMinute > 100_000) throw invalidArgument(f("teacher.requests_per_minute"), "must be from 1 to 100000 (0 for no limit)");
  checkText(f("task_description"), j.taskDescription, 20_000, true);
  if (j.fewShotExamples.length > 20) throw invalidArgument(f("few_shot_examples"), `has ${j.fewShotExamples.length} examples; the limit is 20`);
  const fewShot = j.fewShotExamples.map((e, i) => turnsOf(f(`few_shot_examples[${i}]`), e));
  if (j.seedDatasetVersion !== "") parseNestedName(f("seed_dataset_version"), j.seedDatasetVersion, ["datasets", "versions"]);
  if (fewShot.length === 0 && j.seedDatasetVersion === "") throw invalidArgument(f("few_shot_examples"), "give few-shot examples or a seed_dataset_version to draw them from: the teacher needs to see the format");
  if (!Number.isInteger(j.targetCount) || j.targetCount < 1 || j.targetCount > 100_000) throw invalidArgument(f("target_count"), `is ${j.targetCount}; it must be from 1 to 100000`);
  const g = j.generationParams;
  const temperature = g?.temperature ?? DEFAULT_GENERATION.temperature;
  if (!(temperature >= 0 && temperature <= 2)) throw invalidArgument(f("generation_params.temperature"), "must be from 0 to 2");
  const topP = g?.topP ?? DEFAULT_GENERATION.topP;
  if (!(topP > 0 && topP <= 1)) throw invalidArgument(f("generation_params.top_p"), "must be greater than 0 and at most 1");
  const maxTokens = g?.maxTokens ?? DEFAULT_GENERATION.maxTokens;
  if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > 32768) throw invalidArgument(f("generation_params.max_tokens"), "must be from 1 to 32768");
  const reviewFraction = j.reviewSampleFraction ?? 0.1;
  if (!(reviewFraction >= 0 && reviewFraction <= 1)) throw invalidArgument(f("review_sample_fraction"), `is ${reviewFraction}; it must be from 0 to 1 (0.1 to 0.2 recommended)`);
  if (j.maxTeacherRequests < 0) throw invalidArgument(f("max_teacher_requests"), "must not be negative");
  if (j.maxTotalTokens < 0) throw invalidArgument(f("max_total_tokens"), "must not be negative");
  if (j.maxCost !== undefined) {
    if (!(j.maxCost > 0)) throw invalidArgument(f("max_cost"), "must be more than 0");
    if (priceOf(prices, t.model) === undefined) throw invalidArgument(f("max_cost"), `no price is configured for ${t.model} (LATHE_SYNTHGEN_PRICES), so a cost budget cannot be kept; set max_total_tokens instead`);
  }
  return {
    displayName: checkText(f("display_name"), j.displayName, 200),
    labels: checkLabels(f("labels"), j.labels),
    teacher: { baseUrl: t.baseUrl.replace(/\/+$/, ""), model: t.model, apiKeySecret: t.apiKeySecret, maxConcurrent: t.maxConcurrentRequests || 4, requestsPerMinute: t.requestsPerMinute },
    task: j.taskDescription,
    fewShot,
    targetCount: j.targetCount,
    generation: { temperature, topP, maxTokens, seed: g?.seed ?? null },
    reviewFraction,
    seedDatasetVersion: j.seedDatasetVersion,
    checkOptions: CheckOptions.toJSON(CheckOptions.fromPartial(j.checkOptions ?? {})),
    maxRequests: j.maxTeacherRequests || j.targetCount * 3,
    maxTotalTokens: j.maxTotalTokens,
    maxCost: j.maxCost ?? null,
  };
}
