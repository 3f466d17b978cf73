// The public surface of @lathe/testing: everything else in src/ is internal.
export { testPostgres, type TestPostgres } from "./test-postgres.js";
export { testNats, cleanupNatsPrefix, type TestNats } from "./test-nats.js";
export { startNatsServer, type NatsServerProcess, type StartNatsServerOptions } from "./nats-server-process.js";
export { freePort } from "./free-port.js";
export { tempDir, type TempDir } from "./temp-dir.js";
export { waitFor, type WaitForOptions } from "./wait-for.js";
export { startTestPlatform, testKeys, type TestPlatform } from "./platform.js";
export { startOpenAiUpstream, type OpenAiUpstream, type OpenAiUpstreamOptions, type RecordedRequest, type LoadedAdapter } from "./openai-upstream.js";
export { startKubernetesApi, type KubernetesApiDouble, type KubernetesApiRequest, type PodState } from "./kubernetes-api.js";
