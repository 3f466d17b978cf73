#!/usr/bin/env node
import { runMain } from "@lathe/kit";
import { configSchema, createGatewayService } from "./index.js";
import { migrations } from "./db/migrations.js";
import { schema } from "./domain/deployments.js";

await runMain({ name: "gateway", configSchema, factory: createGatewayService, schema: { name: schema, migrations } });
