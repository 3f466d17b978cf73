#!/usr/bin/env node
import { runMain } from "@lathe/kit";
import { configSchema, createTrainerService } from "./index.js";

await runMain({ name: "trainer", configSchema, factory: createTrainerService });
