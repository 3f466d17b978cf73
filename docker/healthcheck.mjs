// The image's HEALTHCHECK: asks the standard gRPC health service of the server in this container
// about the server as a whole (service ""), which every Lathe service answers; exits 0 when it is
// SERVING, 1 otherwise (draining, not started, not answering within 4 s). Copied next to the CLI,
// so @grpc/grpc-js and grpc-health-check resolve from the pruned install's node_modules.
import { credentials, makeGenericClientConstructor } from "@grpc/grpc-js";
import { service } from "grpc-health-check";

const port = process.env.LATHE_GRPC_PORT || "50051";
const Health = makeGenericClientConstructor(service, "grpc.health.v1.Health");
const client = new Health(`127.0.0.1:${port}`, credentials.createInsecure());
client.check({ service: "" }, { deadline: Date.now() + 4000 }, (err, res) => {
  const status = err ? `error: ${err.details || err.message}` : res.status;
  client.close();
  if (status === "SERVING" || status === 1) process.exit(0);
  console.error(`unhealthy: ${status}`);
  process.exit(1);
});
