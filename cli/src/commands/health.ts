import { credentials, makeGenericClientConstructor, type ServiceError } from "@grpc/grpc-js";
import { Command } from "commander";
import { service as healthService } from "grpc-health-check";
import { resolveConnection, type ConnectionOptions } from "../connection.js";
import { printJson, printTable } from "../output.js";

export const serviceNames = [
  "lathe.registry.v1.RegistryService",
  "lathe.dataset.v1.DatasetService",
  "lathe.synthgen.v1.SynthGenService",
  "lathe.trainer.v1.TrainerService",
  "lathe.evaluator.v1.EvaluatorService",
  "lathe.gateway.v1.GatewayService",
];

const statusNames = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

/** Asks the standard gRPC health service of `server` about each Lathe service. */
export async function checkHealth(server: string): Promise<Record<string, string>> {
  const Health = makeGenericClientConstructor(healthService, "grpc.health.v1.Health");
  const client = new Health(server, credentials.createInsecure());
  try {
    const out: Record<string, string> = {};
    for (const name of serviceNames) {
      out[name] = await new Promise<string>((resolve) => {
        (client as unknown as { check(req: object, opts: object, cb: (err: ServiceError | null, res?: { status: string | number }) => void): void }).check(
          { service: name },
          { deadline: Date.now() + 5000 },
          (err, res) => resolve(err ? `ERROR: ${err.details || err.message}` : typeof res!.status === "number" ? statusNames[res!.status]! : String(res!.status)),
        );
      });
    }
    return out;
  } finally {
    client.close();
  }
}

export function healthCommand(): Command {
  return new Command("health")
    .description("show the health of each service (the standard gRPC health check)")
    .option("--server <host:port>", "address of the Lathe API (default: the local `lathe up`)")
    .option("--json", "print machine-readable JSON")
    .action(async (o: ConnectionOptions) => {
      const report = await checkHealth(resolveConnection(o).server);
      if (o.json) printJson(report);
      else printTable(Object.entries(report).map(([service, status]) => ({ service, status })), ["service", "status"]);
      if (Object.values(report).some((s) => s !== "SERVING")) process.exitCode = 1;
    });
}
