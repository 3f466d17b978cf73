import { defineConfig } from "vite";

// Built into dist/ and served by the gateway under /console/ (services/gateway/src/console-static.ts).
export default defineConfig({
  base: "/console/",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true, target: "es2022" },
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
});
