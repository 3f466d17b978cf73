#!/usr/bin/env node
import { runMain } from "@lathe/kit";
import { configSchema, createEvaluatorService } from "./index.js";
import { migrations } from "./db/migrations.js";
import { schema } from "./domain/runs.js";

await runMain({ name: "evaluator", configSchema, factory: createEvaluatorService, schema: { name: schema, migrations } });
