import { setTimeout as sleep } from "node:timers/promises";
import { Command, Option } from "commander";
import { call, qualifiedName } from "@lathe/kit";
import { Deployment, Deployment_State, DeploymentBackend, GatewayServiceClient } from "@lathe/proto/lathe/gateway/v1/gateway_service";
import { RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { connect, withConnection, type ConnectionOptions } from "../connection.js";
import { parseLabel } from "../flags.js";
import { adapterName, aliasName, modelName, versionOfAdapter } from "../names.js";
import { printJson, printTable } from "../output.js";

/** `ID` or `deployments/ID` → `deployments/ID`. */
export const deploymentName = (arg: string): string => qualifiedName("deployments", arg);

const stateNames: Record<number, string> = {
  [Deployment_State.STATE_CREATING]: "creating",
  [Deployment_State.STATE_READY]: "ready",
  [Deployment_State.STATE_UPDATING]: "updating",
  [Deployment_State.STATE_FAILED]: "failed",
};

const backendOf = (b: DeploymentBackend) => (b === DeploymentBackend.DEPLOYMENT_BACKEND_UPSTREAM_OPENAI ? "upstream" : "embedded");

function row(d: Deployment): Record<string, string> {
  return {
    name: d.name,
    state: stateNames[d.state] ?? "unknown",
    backend: backendOf(d.backend),
    models: [d.servedModelName, ...d.adapters.map((a) => `${d.servedModelName}:${a.servedName}`)].join(" "),
    adapters: d.adapters.map((a) => `${a.servedName}=${a.adapterVersion || a.source}`).join(" "),
    error: d.error?.message ?? "",
  };
}
const columns = ["name", "state", "backend", "models", "adapters", "error"];

/**
 * One adapter of `lathe deployments create`: `ADAPTER` (its latest version now), `ADAPTER@N` (a
 * version) or `ADAPTER@ALIAS` (following the alias), with `=SERVED` for another served name.
 */
export function adapterSource(model: string, spec: string): { adapter: string; at: string | undefined; servedName: string } {
  const eq = spec.indexOf("=");
  const ref = eq < 0 ? spec : spec.slice(0, eq);
  const served = eq < 0 ? "" : spec.slice(eq + 1);
  const at = ref.indexOf("@");
  const adapter = at < 0 ? ref : ref.slice(0, at);
  if (adapter === "" || adapter.includes("/") || adapter.includes(":")) throw new Error(`${spec}: expected ADAPTER, ADAPTER@VERSION or ADAPTER@ALIAS (an adapter of ${model}), optionally =SERVED_NAME`);
  return { adapter, at: at < 0 ? undefined : ref.slice(at + 1), servedName: served };
}

type CreateOptions = ConnectionOptions & {
  id?: string;
  backend: "embedded" | "upstream";
  upstreamUrl?: string;
  upstreamKeySecret?: string;
  upstreamModel?: string;
  servedName?: string;
  adapter: string[];
  contextLength?: string;
  displayName?: string;
  label?: Record<string, string>;
  requestId?: string;
  wait?: boolean;
};

/** `lathe deployments create MODEL[:ADAPTER[@ALIAS|@N]]`: serves a base model and adapters, and prints the names to call them by. */
async function createDeployment(target: string, o: CreateOptions): Promise<void> {
  const colon = target.indexOf(":");
  const model = colon < 0 ? target : target.slice(0, colon);
  const specs = [...(colon < 0 ? [] : [target.slice(colon + 1)]), ...o.adapter];
  const gateway = connect(GatewayServiceClient, o);
  const registry = connect(RegistryServiceClient, o);
  try {
    const adapters = [];
    for (const s of specs) {
      const a = adapterSource(model, s);
      let source: string;
      if (a.at === undefined) {
        // No version or alias: the adapter's latest version now, pinned.
        const { adapter } = await call(registry, "getAdapter", { name: adapterName(`${model}/${a.adapter}`) });
        if (!adapter?.latestVersion) throw new Error(`${model}/${a.adapter} has no version yet`);
        source = adapter.latestVersion;
      } else {
        source = /^[1-9][0-9]*$/.test(a.at) ? versionOfAdapter(`${model}/${a.adapter}`, a.at) : aliasName(`${model}/${a.adapter}`, a.at);
      }
      adapters.push({ source, servedName: a.servedName, adapterVersion: "" });
    }
    const modelId = modelName(model).slice("models/".length);
    const contextLength = o.contextLength === undefined ? 0 : Number(o.contextLength);
    if (!Number.isInteger(contextLength) || contextLength < 0) throw new Error(`--context-length ${o.contextLength}: expected a number of tokens`);
    const { deployment } = await call(gateway, "createDeployment", {
      deploymentId: o.id ?? modelId.replace(/[^a-z0-9-]+/g, "-").replace(/^[^a-z]+/, "d-"),
      deployment: Deployment.fromPartial({
        baseModel: modelName(model),
        servedModelName: o.servedName ?? "",
        adapters,
        backend: o.backend === "upstream" ? DeploymentBackend.DEPLOYMENT_BACKEND_UPSTREAM_OPENAI : DeploymentBackend.DEPLOYMENT_BACKEND_EMBEDDED_LLAMA_CPP,
        upstreamBaseUrl: o.upstreamUrl ?? "",
        upstreamApiKeySecret: o.upstreamKeySecret ?? "",
        upstreamModel: o.upstreamModel ?? "",
        contextLength,
        displayName: o.displayName ?? "",
        labels: o.label ?? {},
      }),
      requestId: o.requestId ?? "",
    });
    const d = o.wait ? await waitSettled(gateway, deployment!.name) : deployment!;
    if (o.json) printJson(Deployment.toJSON(d));
    else {
      process.stdout.write(`created ${d.name} (${stateNames[d.state]})\n`);
      process.stdout.write(`call it as: ${[d.servedModelName, ...d.adapters.map((a) => `${d.servedModelName}:${a.servedName}`)].join(", ")}\n`);
    }
    if (d.state === Deployment_State.STATE_FAILED) {
      process.stderr.write(`lathe: ${d.name} failed: ${d.error?.message ?? "see lathe deployments get"}\n`);
      process.exitCode = 1;
    }
  } finally {
    gateway.close();
    registry.close();
  }
}

/** The deployment once it is ready or failed (polled every half second). */
async function waitSettled(client: GatewayServiceClient, name: string): Promise<Deployment> {
  for (;;) {
    const { deployment } = await call(client, "getDeployment", { name });
    if (deployment!.state === Deployment_State.STATE_READY || deployment!.state === Deployment_State.STATE_FAILED) return deployment!;
    await sleep(500);
  }
}

/** `lathe deployments …`: what the gateway serves. */
export function deploymentsCommand(): Command {
  const cmd = new Command("deployments").description("serve base models and adapters on the gateway's OpenAI-compatible API");

  withConnection(
    cmd
      .command("create <target>")
      .description("serve MODEL, with MODEL:ADAPTER (its latest version, pinned), MODEL:ADAPTER@N or MODEL:ADAPTER@ALIAS (following the alias)")
      .option("--id <id>", "the deployment id (default: the model id)")
      .addOption(new Option("--backend <backend>", "where answers are computed").choices(["embedded", "upstream"]).default("embedded"))
      .option("--upstream-url <url>", "for --backend upstream: the OpenAI-compatible server's base URL, e.g. http://vllm:8000/v1")
      .option("--upstream-key-secret <ref>", "for --backend upstream: where its API key is, env:NAME or file:/path (never the key)")
      .option("--upstream-model <name>", "for --backend upstream: the base model's name there (default: the model id)")
      .option("--served-name <name>", "the name clients use for the base model (default: the model id)")
      .option("--adapter <ADAPTER[@N|@ALIAS][=SERVED]>", "another adapter to serve (repeatable)", (v: string, prev: string[]) => [...prev, v], [] as string[])
      .option("--context-length <tokens>", "tokens per sequence (default 4096, at most the model's)")
      .option("--display-name <text>", "a human-readable name")
      .addOption(new Option("--label <key=value>", "a label (repeatable)").argParser(parseLabel))
      .option("--request-id <id>", "idempotency key: a retry with the same id returns the same deployment")
      .option("--wait", "wait until it is ready (or failed)"),
  ).action(createDeployment);

  withConnection(cmd.command("list").description("list your tenant's deployments").option("--filter <expr>", 'e.g. state = STATE_READY AND labels.team = "search"', "")).action(
    async (o: ConnectionOptions & { filter: string }) => {
      const client = connect(GatewayServiceClient, o);
      try {
        const all: Deployment[] = [];
        let pageToken = "";
        do {
          const page = await call(client, "listDeployments", { pageSize: 500, pageToken, filter: o.filter });
          all.push(...page.deployments);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        if (o.json) printJson({ deployments: all.map((d) => Deployment.toJSON(d)) });
        else if (all.length === 0) process.stdout.write("no deployments\n");
        else printTable(all.map(row), columns);
      } finally {
        client.close();
      }
    },
  );

  withConnection(cmd.command("get <name>").description("show one deployment").option("--wait", "wait until it is ready (or failed)")).action(async (name: string, o: ConnectionOptions & { wait?: boolean }) => {
    const client = connect(GatewayServiceClient, o);
    try {
      const d = o.wait ? await waitSettled(client, deploymentName(name)) : (await call(client, "getDeployment", { name: deploymentName(name) })).deployment!;
      if (o.json) printJson(Deployment.toJSON(d));
      else printTable([row(d)], columns);
    } finally {
      client.close();
    }
  });

  withConnection(cmd.command("delete <name>").description("stop serving a deployment and delete it")).action(async (name: string, o: ConnectionOptions) => {
    const client = connect(GatewayServiceClient, o);
    try {
      await call(client, "deleteDeployment", { name: deploymentName(name), etag: "" });
      if (o.json) printJson({ deleted: deploymentName(name) });
      else process.stdout.write(`deleted ${deploymentName(name)}\n`);
    } finally {
      client.close();
    }
  });

  return cmd;
}
