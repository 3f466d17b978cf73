#!/usr/bin/env node
import { runMain } from "@lathe/kit";
import { configSchema, createGatewayService } from "./index.js";

await runMain({ name: "gateway", configSchema, factory: createGatewayService });
