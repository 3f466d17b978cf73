#!/usr/bin/env node
import { runMain } from "@lathe/kit";
import { configSchema, createRegistryService } from "./index.js";

await runMain({ name: "registry", configSchema, factory: createRegistryService });
