#!/usr/bin/env node
import { runMain } from "@lathe/kit";
import { configSchema, createSynthGenService } from "./index.js";
import { migrations } from "./db/migrations.js";
import { schema } from "./domain/jobs.js";

await runMain({ name: "synthgen", configSchema, factory: createSynthGenService, schema: { name: schema, migrations } });
