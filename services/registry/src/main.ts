#!/usr/bin/env node
import { runMain } from "@lathe/kit";
import { configSchema, createRegistryService } from "./index.js";
import { migrations } from "./db/migrations.js";
import { schema } from "./domain/models.js";

await runMain({ name: "registry", configSchema, factory: createRegistryService, schema: { name: schema, migrations } });
