import { createHash, type Hash } from "node:crypto";
import { once } from "node:events";
import { createWriteStream, type WriteStream } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { Command, Option } from "commander";
import { call, uploadFolder, fromGrpcError, prefixedDigest } from "@lathe/kit";
import {
  Adapter,
  AdapterVersion,
  Alias,
  ArtifactFormat,
  GgufType,
  LineageDirection,
  LineageRelation,
  RegistryServiceClient,
  ResourceKind,
  type CreateAdapterVersionRequest,
  type DownloadAdapterVersionResponse,
  type UploadAdapterVersionResponse,
} from "@lathe/proto/lathe/registry/v1/registry_service";
import { connect, withConnection, type ConnectionOptions } from "../connection.js";
import { parseLabel } from "../flags.js";
import { adapterName, adapterVersionName, aliasName, lastId, modelName, versionOfAdapter } from "../names.js";
import { printJson, printTable } from "../output.js";

function versionRow(v: AdapterVersion): Record<string, string> {
  return { name: v.name, digest: v.artifactDigest.slice(0, 19), r: String(v.loraConfig?.r ?? ""), aliases: v.aliases.map(lastId).join(","), created: v.createTime?.toISOString() ?? "" };
}

/**
 * Writes downloaded files into `outDir`, each first under a temporary name and renamed into place
 * only once its size and sha256 match its header: a corrupted or cut-off download leaves nothing
 * in `outDir` that looks like the file.
 */
async function receiveFiles(messages: AsyncIterable<DownloadAdapterVersionResponse>, outDir: string, written: { path: string; size: number; digest: string }[]): Promise<void> {
  let current: { target: string; tmp: string; out: WriteStream; hash: Hash; got: number; size: number; digest: string; path: string } | undefined;
  const finish = async () => {
    if (!current) return;
    const c = current;
    current = undefined;
    c.out.end();
    await once(c.out, "close");
    const digest = prefixedDigest(c.hash.digest("hex"));
    if (c.got !== c.size || digest !== c.digest) {
      await rm(c.tmp, { force: true });
      throw new Error(`${c.path}: the download does not match its header (${c.got} of ${c.size} bytes, ${digest} instead of ${c.digest}); nothing was written`);
    }
    await rename(c.tmp, c.target);
    written.push({ path: c.target, size: c.size, digest: c.digest });
  };
  try {
    for await (const m of messages) {
      if (m.fileHeader) {
        await finish();
        const path = m.fileHeader.path;
        if (path === "" || path.startsWith("/") || path.split("/").some((p) => p === "" || p === "." || p === ".." || p.includes("\\"))) throw new Error(`the server sent a file named ${JSON.stringify(path)}, which is not a path inside the folder`);
        const target = join(outDir, ...path.split("/"));
        await mkdir(dirname(target), { recursive: true });
        const tmp = `${target}.partial-${process.pid}`;
        current = { target, tmp, out: createWriteStream(tmp), hash: createHash("sha256"), got: 0, size: m.fileHeader.sizeBytes, digest: m.fileHeader.digest, path };
      } else if (m.chunk && current) {
        current.hash.update(m.chunk);
        current.got += m.chunk.length;
        if (!current.out.write(m.chunk)) await once(current.out, "drain");
      }
    }
    await finish();
  } catch (err) {
    if (current) {
      current.out.destroy();
      await rm(current.tmp, { force: true });
    }
    throw err;
  }
}

/** An alias and the moves in its history, or its JSON. */
function printAlias(a: Alias, json?: boolean): void {
  if (json) return printJson(Alias.toJSON(a));
  process.stdout.write(`${a.name} -> ${a.adapterVersion}\n`);
  for (const h of a.history) process.stdout.write(`  ${h.moveTime?.toISOString()}  ${h.fromVersion || "(none)"} -> ${h.toVersion}  ${["", "manual", "promotion", "rollback"][h.trigger]} by ${h.actor}${h.reason ? `: ${h.reason}` : ""}\n`);
  if (a.decisions.length > 0) process.stdout.write("promotion decisions:\n");
  for (const d of a.decisions) process.stdout.write(`  ${d.decideTime?.toISOString()}  ${d.candidateVersion}: ${d.promoted ? "promoted" : "not promoted"} (${d.source === "follow_up" ? "the job's conditions" : "the alias's rule"}${d.fineTuningJob ? `, ${d.fineTuningJob}` : ""}): ${d.reason}\n`);
}

/** `lathe adapters alias-get`: an alias with where it points, every move and every promotion decision. */
export async function showAlias(adapter: string, alias: string, o: ConnectionOptions): Promise<void> {
  const client = connect(RegistryServiceClient, o);
  try {
    const { alias: a } = await call(client, "getAlias", { name: aliasName(adapterName(adapter), alias) });
    printAlias(a!, o.json);
  } finally {
    client.close();
  }
}

export type SetAliasOptions = ConnectionOptions & { alias: string; reason: string };

/** `lathe adapters alias`: points an alias of ADAPTER at version VERSION and prints it with its history. */
export async function setAlias(adapter: string, version: string, o: SetAliasOptions): Promise<void> {
  const client = connect(RegistryServiceClient, o);
  try {
    const name = adapterName(adapter);
    const { alias } = await call(client, "setAlias", { name: aliasName(name, o.alias), adapterVersion: versionOfAdapter(name, version), reason: o.reason, expectedAdapterVersion: "" });
    printAlias(alias!, o.json);
  } finally {
    client.close();
  }
}

/** `--format` of `lathe adapters download`. */
const DOWNLOAD_FORMATS = { peft: ArtifactFormat.ARTIFACT_FORMAT_PEFT, merged: ArtifactFormat.ARTIFACT_FORMAT_MERGED, gguf: ArtifactFormat.ARTIFACT_FORMAT_GGUF, "gguf-lora": ArtifactFormat.ARTIFACT_FORMAT_GGUF_LORA } as const;
/** `--gguf-type`: q8_0 for `--format gguf` only (a GGUF LoRA adapter is f16 or f32). */
const GGUF_TYPES = { f16: GgufType.GGUF_TYPE_F16, f32: GgufType.GGUF_TYPE_F32, q8_0: GgufType.GGUF_TYPE_Q8_0 } as const;

export type DownloadAdapterVersionOptions = ConnectionOptions & { format: string; ggufType: string; out: string };

/** `lathe adapters download`: writes MODEL/ADAPTER@VERSION into --out in the format asked for and lists the files. */
export async function downloadAdapterVersion(version: string, o: DownloadAdapterVersionOptions): Promise<void> {
  const client = connect(RegistryServiceClient, o);
  const format = DOWNLOAD_FORMATS[o.format as keyof typeof DOWNLOAD_FORMATS];
  const ggufType = GGUF_TYPES[o.ggufType as keyof typeof GGUF_TYPES];
  if (format === undefined || ggufType === undefined) throw new Error(`--format must be one of ${Object.keys(DOWNLOAD_FORMATS).join(", ")} and --gguf-type one of ${Object.keys(GGUF_TYPES).join(", ")}`);
  const written: { path: string; size: number; digest: string }[] = [];
  try {
    const stream = client.downloadAdapterVersion({ name: adapterVersionName(version), format, ggufType });
    await receiveFiles(stream as AsyncIterable<DownloadAdapterVersionResponse>, o.out, written).catch((err: unknown) => {
      throw err instanceof Error && "code" in err && typeof (err as { code: unknown }).code === "number" ? fromGrpcError(err as Parameters<typeof fromGrpcError>[0]) : err;
    });
    if (o.json) printJson({ files: written });
    else for (const f of written) process.stdout.write(`${f.path}  ${f.size} bytes  ${f.digest}\n`);
  } finally {
    client.close();
  }
}

/** `lathe adapters …` and `lathe lineage`: adapters, their versions, aliases, cards and downloads. */
export function adaptersCommand(): Command {
  const adapters = new Command("adapters").description("register adapters and their versions, move aliases, get model cards and files");

  withConnection(
    adapters
      .command("register <adapter> <dir>")
      .description("upload the PEFT folder DIR from this machine as a new version of ADAPTER (MODEL/ADAPTER; created when missing)")
      .option("--server-path", "DIR is a folder on the server, inside its import roots (LATHE_IMPORT_ROOTS), instead of one to upload")
      .option("--description <text>", "what this version is", "")
      .option("--train-dataset <version>", "the dataset version it was trained on")
      .option("--eval-dataset <version>", "the dataset version it was evaluated on")
      .addOption(new Option("--label <key=value>", "a label (repeatable), e.g. intended-use=…").argParser(parseLabel)),
  ).action(async (adapter: string, dir: string, o: ConnectionOptions & { description: string; trainDataset?: string; evalDataset?: string; label?: Record<string, string>; serverPath?: boolean }) => {
    const client = connect(RegistryServiceClient, o);
    try {
      const req = {
        parent: adapterName(adapter),
        adapterVersion: AdapterVersion.fromPartial({ artifactUri: resolve(dir), description: o.description, trainDatasetVersion: o.trainDataset ?? "", evalDatasetVersion: o.evalDataset ?? "", labels: o.label ?? {} }),
        allowMissing: true,
        requestId: "",
      };
      const { adapterVersion } = o.serverPath ? await call(client, "createAdapterVersion", req) : await uploadFolder<CreateAdapterVersionRequest, UploadAdapterVersionResponse>((cb) => client.uploadAdapterVersion(cb), req, resolve(dir));
      if (o.json) printJson(AdapterVersion.toJSON(adapterVersion!));
      else process.stdout.write(`registered ${adapterVersion!.name} (${adapterVersion!.artifactDigest})\n`);
    } finally {
      client.close();
    }
  });

  withConnection(adapters.command("list <model>").description("list the adapters of a base model")).action(async (model: string, o: ConnectionOptions) => {
    const client = connect(RegistryServiceClient, o);
    try {
      const { adapters: list } = await call(client, "listAdapters", { parent: modelName(model), pageSize: 1000, pageToken: "", filter: "" });
      if (o.json) printJson({ adapters: list.map((a) => Adapter.toJSON(a)) });
      else printTable(list.map((a) => ({ name: a.name, versions: String(a.versionCount), latest: a.latestVersion })), ["name", "versions", "latest"]);
    } finally {
      client.close();
    }
  });

  withConnection(adapters.command("get <adapter>").description("show an adapter, or a version with MODEL/ADAPTER@N")).action(async (arg: string, o: ConnectionOptions) => {
    const client = connect(RegistryServiceClient, o);
    try {
      if (arg.includes("@") || arg.includes("/versions/")) {
        const { adapterVersion } = await call(client, "getAdapterVersion", { name: adapterVersionName(arg) });
        if (o.json) printJson(AdapterVersion.toJSON(adapterVersion!));
        else printTable([versionRow(adapterVersion!)], ["name", "digest", "r", "aliases", "created"]);
      } else {
        const { adapter } = await call(client, "getAdapter", { name: adapterName(arg) });
        if (o.json) printJson(Adapter.toJSON(adapter!));
        else printTable([{ name: adapter!.name, base: adapter!.baseModel, versions: String(adapter!.versionCount), latest: adapter!.latestVersion }], ["name", "base", "versions", "latest"]);
      }
    } finally {
      client.close();
    }
  });

  withConnection(adapters.command("versions <adapter>").description("list the versions of an adapter")).action(async (adapter: string, o: ConnectionOptions) => {
    const client = connect(RegistryServiceClient, o);
    try {
      const { adapterVersions } = await call(client, "listAdapterVersions", { parent: adapterName(adapter), pageSize: 1000, pageToken: "", filter: "" });
      if (o.json) printJson({ adapterVersions: adapterVersions.map((v) => AdapterVersion.toJSON(v)) });
      else printTable(adapterVersions.map(versionRow), ["name", "digest", "r", "aliases", "created"]);
    } finally {
      client.close();
    }
  });

  withConnection(adapters.command("alias-get <adapter> <alias>").description("show an alias of ADAPTER: its version, every move, and every promotion decision with why")).action(showAlias);

  withConnection(
    adapters
      .command("alias <adapter> <version>")
      .description("point an alias of ADAPTER at VERSION (a number)")
      .requiredOption("--alias <name>", "the alias, e.g. production")
      .option("--reason <text>", "why", ""),
  ).action(setAlias);

  withConnection(
    adapters
      .command("rollback <adapter>")
      .description("move an alias back to where it pointed before its last move")
      .requiredOption("--alias <name>", "the alias")
      .option("--reason <text>", "why", ""),
  ).action(async (adapter: string, o: ConnectionOptions & { alias: string; reason: string }) => {
    const client = connect(RegistryServiceClient, o);
    try {
      const { alias } = await call(client, "rollbackAlias", { name: aliasName(adapter, o.alias), adapterVersion: "", reason: o.reason });
      printAlias(alias!, o.json);
    } finally {
      client.close();
    }
  });

  withConnection(adapters.command("card <version>").description("print the model card (Markdown) of MODEL/ADAPTER@VERSION")).action(async (version: string, o: ConnectionOptions) => {
    const client = connect(RegistryServiceClient, o);
    try {
      const { modelCard } = await call(client, "getModelCard", { name: adapterVersionName(version) });
      if (o.json) printJson({ name: modelCard!.name, markdown: modelCard!.markdown });
      else process.stdout.write(modelCard!.markdown);
    } finally {
      client.close();
    }
  });

  withConnection(
    adapters
      .command("download <version>")
      .description("download MODEL/ADAPTER@VERSION as a PEFT folder, a merged model folder, a GGUF file of the merged model, or a GGUF LoRA adapter (adapter.gguf) for llama.cpp to apply over the base model's GGUF")
      .addOption(new Option("--format <format>", "what to download").choices(Object.keys(DOWNLOAD_FORMATS)).default("peft"))
      .addOption(new Option("--gguf-type <type>", "GGUF tensor type (q8_0: --format gguf only)").choices(Object.keys(GGUF_TYPES)).default("f16"))
      .requiredOption("--out <dir>", "the folder to write into"),
  ).action(downloadAdapterVersion);

  return adapters;
}

export type LineageOptions = ConnectionOptions & { up?: boolean; down?: boolean; depth: string };

/** `lathe lineage`: the edges around NAME, a line each. */
export async function showLineage(name: string, o: LineageOptions): Promise<void> {
  const client = connect(RegistryServiceClient, o);
  try {
    const direction = o.up && !o.down ? LineageDirection.LINEAGE_DIRECTION_UPSTREAM : o.down && !o.up ? LineageDirection.LINEAGE_DIRECTION_DOWNSTREAM : LineageDirection.LINEAGE_DIRECTION_BOTH;
    const res = await call(client, "getLineage", { name, direction, depth: Number(o.depth) });
    if (o.json) printJson({ nodes: res.nodes.map((n) => ({ ...n, kind: ResourceKind[n.kind] })), edges: res.edges.map((e) => ({ ...e, relation: LineageRelation[e.relation] })), truncated: res.truncated });
    else for (const e of res.edges) process.stdout.write(`${e.source}  --${LineageRelation[e.relation].replace("LINEAGE_RELATION_", "").toLowerCase()}-->  ${e.target}\n`);
  } finally {
    client.close();
  }
}

/** `lathe lineage NAME [--up|--down]`. */
export function lineageCommand(): Command {
  return withConnection(
    new Command("lineage")
      .argument("<name>", "a resource name, e.g. models/M/adapters/A/versions/1 or datasets/D/versions/V")
      .description("show what a resource was made from (--up), what was made from it (--down), or both")
      .option("--up", "upstream only")
      .option("--down", "downstream only")
      .option("--depth <n>", "edges to follow", "5"),
  ).action(showLineage);
}
