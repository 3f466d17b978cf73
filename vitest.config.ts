import { defineConfig } from "vitest/config";

// Every test of the workspace, run against the built packages (npm test builds first).
// Integration tests start real servers, so files run in separate processes.
export default defineConfig({
  test: {
    include: ["{libs,services,cli,bench}/*/src/**/*.test.ts", "libs/engine/ts/**/*.test.ts", "{libs,services}/*/test/**/*.test.ts", "{cli,bench}/{src,test}/**/*.test.ts", "deploy/test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/dist/**"],
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ["default"],
    // The secrets tests name (teachers', judges', upstreams' keys), besides the default places.
    env: { LATHE_SECRET_REFS: "env:LATHE_TEST_*,env:LATHE_SECRET_*,file:/var/run/secrets/lathe/*" },
    // Every service's logs go to a folder too; the run fails if a planted secret is found there.
    globalSetup: ["scripts/test-log-scan.ts"],
  },
});
