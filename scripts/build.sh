#!/usr/bin/env bash
# Generates libs/proto from proto/ (ts-proto through buf, plus a descriptor set for gRPC server
# reflection), then builds every TypeScript project with `tsc -b` (project references).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=node_modules/.bin
rm -rf libs/proto/src/gen
mkdir -p libs/proto/descriptor
"$bin/buf" generate proto --template proto/buf.gen.yaml
"$bin/buf" build proto --as-file-descriptor-set -o libs/proto/descriptor/lathe.binpb
"$bin/tsc" -b tsconfig.json
