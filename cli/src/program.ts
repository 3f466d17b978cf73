import { Command } from "commander";
import { adaptersCommand, lineageCommand } from "./commands/adapters.js";
import { chatCommand } from "./commands/chat.js";
import { datasetsCommand } from "./commands/datasets.js";
import { deploymentsCommand } from "./commands/deployments.js";
import { evalsCommand } from "./commands/evals.js";
import { healthCommand } from "./commands/health.js";
import { jobsCommand } from "./commands/jobs.js";
import { initTinyCommand, mergeCommand } from "./commands/local.js";
import { metricsCommand } from "./commands/metrics.js";
import { modelsCommand } from "./commands/models.js";
import { quickstartCommand } from "./commands/quickstart.js";
import { synthCommand } from "./commands/synth.js";
import { traceCommand } from "./commands/trace.js";
import { upCommand } from "./commands/up.js";
import { evalLossCommand, trainCommand } from "./commands/train.js";

/** The `lathe` command line. */
export function buildProgram(): Command {
  const program = new Command("lathe")
    .description("Lathe: fine-tune LLMs with LoRA and QLoRA, from raw JSONL to a served adapter")
    .version("0.1.0")
    .showHelpAfterError()
    .exitOverride();
  program.addCommand(upCommand());
  program.addCommand(quickstartCommand());
  program.addCommand(healthCommand());
  const models = modelsCommand();
  models.addCommand(initTinyCommand());
  program.addCommand(models);
  program.addCommand(mergeCommand());
  program.addCommand(trainCommand()).addCommand(evalLossCommand());
  program.addCommand(datasetsCommand());
  program.addCommand(synthCommand());
  program.addCommand(jobsCommand());
  program.addCommand(traceCommand());
  program.addCommand(evalsCommand());
  program.addCommand(adaptersCommand());
  program.addCommand(lineageCommand());
  program.addCommand(deploymentsCommand());
  program.addCommand(chatCommand());
  program.addCommand(metricsCommand());
  for (const c of program.commands) c.exitOverride();
  return program;
}
