#!/usr/bin/env node
import { runMain } from "@lathe/kit";
import { configSchema, createDatasetService } from "./index.js";
import { migrations } from "./db/migrations.js";
import { schema } from "./domain/store.js";

await runMain({ name: "dataset", configSchema, factory: createDatasetService, schema: { name: schema, migrations } });
