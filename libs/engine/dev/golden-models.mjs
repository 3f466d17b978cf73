// dev/golden-models.mjs — writes the tiny model folder of every golden case (test/golden/*/case.json)
// to build/golden-models/<case>/ with @lathe/models' deterministic writeTinyModel, applying the
// case's configPatch as test/reference.py does. lathe_engine_test's golden test reads them.
//   node dev/golden-models.mjs [out=build/golden-models]
import { readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
const m = await import("@lathe/models");
const golden = new URL("../test/golden/", import.meta.url).pathname;
const out = process.argv[2] ?? new URL("../build/golden-models/", import.meta.url).pathname;
for (const name of readdirSync(golden)) {
  const file = join(golden, name, "case.json");
  if (!existsSync(file)) continue;
  const c = JSON.parse(readFileSync(file, "utf8"));
  const dir = join(out, name);
  await m.writeTinyModel(dir, c.model);
  if (c.configPatch) {
    const cfgPath = join(dir, "config.json");
    const cfg = { ...JSON.parse(readFileSync(cfgPath, "utf8")), ...c.configPatch };
    writeFileSync(cfgPath, JSON.stringify(cfg, null, 2) + "\n");
  }
  console.log(`${name}: ${dir}`);
}
