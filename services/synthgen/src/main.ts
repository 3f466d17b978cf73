#!/usr/bin/env node
import { runMain } from "@lathe/kit";
import { configSchema, createSynthGenService } from "./index.js";

await runMain({ name: "synthgen", configSchema, factory: createSynthGenService });
