import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, extname, join, relative, resolve, sep } from "node:path";
import type { FastifyInstance, FastifyReply } from "fastify";

const types: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".woff2": "font/woff2",
  ".map": "application/json",
};

/**
 * The console's pages may load only what the gateway serves, and talk only to it; styles may be
 * inline (the chart library sizes its canvas with style attributes).
 */
const securityHeaders = {
  "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

/** The folder of the built console (the @lathe/console package's dist/), or undefined when it is not installed. */
export function consoleDistDir(): string | undefined {
  try {
    const pkg = createRequire(import.meta.url).resolve("@lathe/console/package.json");
    return join(dirname(pkg), "dist");
  } catch {
    return undefined;
  }
}

/**
 * Serves the built console under `/console/`: its files as they are (hashed assets cached for a
 * year), `index.html` for `/console/` itself. When the console was not built the page says how
 * to build it instead of a bare 404.
 */
export function registerConsoleStatic(app: FastifyInstance, distDir: string | undefined): void {
  const root = distDir === undefined ? undefined : resolve(distDir);
  const send = async (reply: FastifyReply, file: string, immutable: boolean) => {
    const body = await readFile(file);
    return reply
      .headers(securityHeaders)
      .header("content-type", types[extname(file)] ?? "application/octet-stream")
      .header("cache-control", immutable ? "public, max-age=31536000, immutable" : "no-cache")
      .send(body);
  };
  const missing = (reply: FastifyReply) =>
    reply
      .code(503)
      .header("content-type", "text/plain; charset=utf-8")
      .send(`The console is not built${root === undefined ? " (the @lathe/console package is not installed)" : ` (${join(root, "index.html")} does not exist)`}: run \`bash scripts/build.sh\`, or \`pnpm --filter @lathe/console build\`.\n`);

  app.get("/console", async (_req, reply) => reply.redirect("/console/", 308));
  app.get("/console/", async (_req, reply) => {
    const index = root === undefined ? undefined : join(root, "index.html");
    if (index === undefined || !existsSync(index)) return missing(reply);
    return send(reply, index, false);
  });
  app.get<{ Params: { "*": string } }>("/console/assets/*", async (req, reply) => {
    if (root === undefined) return missing(reply);
    const assets = join(root, "assets");
    const file = resolve(assets, req.params["*"]);
    // Only files inside assets/: `..` and absolute paths are answered as unknown.
    const rel = relative(assets, file);
    if (rel === "" || rel.startsWith("..") || rel.includes(`..${sep}`) || !existsSync(file)) {
      return reply.code(404).header("content-type", "text/plain; charset=utf-8").send(`No console file ${req.url}.\n`);
    }
    return send(reply, file, true);
  });
}
