#!/usr/bin/env node
import { runMain } from "@lathe/kit";
import { configSchema, createDatasetService } from "./index.js";

await runMain({ name: "dataset", configSchema, factory: createDatasetService });
