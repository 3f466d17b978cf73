#!/usr/bin/env node
import { runMain } from "@lathe/kit";
import { configSchema, createEvaluatorService } from "./index.js";

await runMain({ name: "evaluator", configSchema, factory: createEvaluatorService });
