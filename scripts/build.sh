#!/usr/bin/env bash
# Generates libs/proto from proto/ (ts-proto through buf, plus a descriptor set for gRPC server
# reflection), then builds every TypeScript project with `tsc -b` (project references) and the
# web console with Vite.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=node_modules/.bin
rm -rf libs/proto/src/gen
mkdir -p libs/proto/descriptor
"$bin/buf" generate proto --template proto/buf.gen.yaml
"$bin/buf" build proto --as-file-descriptor-set -o libs/proto/descriptor/lathe.binpb
# The engine: its C++ core, tests and the Node-API addon (cmake-js builds against the
# node-api-headers package, so nothing is downloaded). CPU only unless CUDA is found.
cmake -S libs/engine -B libs/engine/build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build libs/engine/build -j"$(nproc)" > /dev/null
( cd libs/engine && node_modules/.bin/cmake-js compile -d . -O build/node --log-level warn > /dev/null )
"$bin/tsc" -b tsconfig.json
# The web console (apps/console): type-checked with its own browser settings, bundled by Vite
# into apps/console/dist, which the gateway serves under /console.
"$bin/tsc" -p apps/console/tsconfig.json
( cd apps/console && node_modules/.bin/vite build --logLevel warn )
