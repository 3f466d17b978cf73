import { basename, resolve } from "node:path";
import { Command, Option } from "commander";
import { call, uploadFolder } from "@lathe/kit";
import { Model, RegistryServiceClient, type CreateModelRequest, type UploadModelResponse } from "@lathe/proto/lathe/registry/v1/registry_service";
import { connect, withConnection, type ConnectionOptions } from "../connection.js";
import { parseLabel } from "../flags.js";
import { modelName } from "../names.js";
import { printJson, printTable } from "../output.js";

function row(m: Model): Record<string, string> {
  return { name: m.name, display_name: m.displayName, architecture: m.architecture, parameters: m.parameterCount.toLocaleString("en-US"), created: m.createTime?.toISOString() ?? "" };
}

export type CreateModelOptions = ConnectionOptions & { path?: string; serverPath?: string; displayName?: string; description: string; label?: Record<string, string>; requestId?: string };

/** `lathe models create`: registers the model folder (uploaded, or on the server) under NAME and prints it. */
export async function createModel(name: string, o: CreateModelOptions): Promise<void> {
  if ((o.path === undefined) === (o.serverPath === undefined)) throw new Error("give the model folder with --path DIR (uploaded from this machine) or --server-path DIR (on the server), not both");
  const client = connect(RegistryServiceClient, o);
  try {
    const req = {
      modelId: name,
      model: Model.fromPartial({ displayName: o.displayName ?? "", description: o.description, sourceUri: resolve(o.path ?? o.serverPath ?? ""), labels: o.label ?? {} }),
      requestId: o.requestId ?? "",
    };
    const { model } = o.serverPath !== undefined ? await call(client, "createModel", req) : await uploadFolder<CreateModelRequest, UploadModelResponse>((cb) => client.uploadModel(cb), req, resolve(o.path!));
    if (o.json) printJson(Model.toJSON(model!));
    else process.stdout.write(`created ${model!.name}\n`);
  } finally {
    client.close();
  }
}

/** `lathe models list`: the base models of the tenant, as a table. */
export async function listModels(o: ConnectionOptions): Promise<void> {
  const client = connect(RegistryServiceClient, o);
  try {
    const all: Model[] = [];
    let pageToken = "";
    do {
      const page = await call(client, "listModels", { pageSize: 500, pageToken });
      all.push(...page.models);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    if (o.json) printJson({ models: all.map((m) => Model.toJSON(m)) });
    else if (all.length === 0) process.stdout.write("no models\n");
    else printTable(all.map(row), ["name", "display_name", "architecture", "parameters", "created"]);
  } finally {
    client.close();
  }
}

/** `lathe models …`: the registry's base models. */
export function modelsCommand(): Command {
  const models = new Command("models").description("register and inspect base models");

  withConnection(
    models
      .command("create <name>")
      .description("register a base model (a Hugging Face model folder) under NAME")
      .option("--path <dir>", "the model folder on this machine, uploaded to the server")
      .option("--server-path <dir>", "instead of uploading: a folder on the server, inside its import roots (LATHE_IMPORT_ROOTS)")
      .option("--display-name <text>", "a human-readable name")
      .option("--description <text>", "a description", "")
      .addOption(new Option("--label <key=value>", "a label (repeatable)").argParser(parseLabel))
      .option("--request-id <id>", "idempotency key: a retry with the same id returns the same model"),
  ).action(createModel);

  withConnection(
    models
      .command("import <dir>")
      .description("upload a Hugging Face model folder (config.json, safetensors, tokenizer) from this machine as a base model")
      .option("--name <id>", "the model id (default: the folder's name, lowercased)")
      .option("--display-name <text>", "a human-readable name"),
  ).action(async (dir: string, o: ConnectionOptions & { name?: string; displayName?: string }) => {
    const client = connect(RegistryServiceClient, o);
    const id = o.name ?? basename(resolve(dir)).toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^[^a-z0-9]+/, "");
    try {
      const { model } = await uploadFolder<CreateModelRequest, UploadModelResponse>((cb) => client.uploadModel(cb), { modelId: id, model: Model.fromPartial({ displayName: o.displayName ?? "", sourceUri: resolve(dir) }), requestId: "" }, resolve(dir));
      if (o.json) printJson(Model.toJSON(model!));
      else process.stdout.write(`imported ${model!.name}: ${model!.architecture}, ${model!.parameterCount.toLocaleString("en-US")} parameters, vocabulary ${model!.vocabSize}, context ${model!.contextLength}, ${model!.artifactDigest}\n`);
    } finally {
      client.close();
    }
  });

  withConnection(models.command("list").description("list the base models of your tenant")).action(listModels);

  withConnection(models.command("get <name>").description("show one base model")).action(async (name: string, o: ConnectionOptions) => {
    const client = connect(RegistryServiceClient, o);
    try {
      const { model } = await call(client, "getModel", { name: modelName(name) });
      if (o.json) printJson(Model.toJSON(model!));
      else printTable([row(model!)], ["name", "display_name", "architecture", "parameters", "created"]);
    } finally {
      client.close();
    }
  });

  withConnection(models.command("delete <name>").description("delete a base model")).action(async (name: string, o: ConnectionOptions) => {
    const client = connect(RegistryServiceClient, o);
    try {
      await call(client, "deleteModel", { name: modelName(name) });
      if (o.json) printJson({ deleted: modelName(name) });
      else process.stdout.write(`deleted ${modelName(name)}\n`);
    } finally {
      client.close();
    }
  });

  return models;
}
