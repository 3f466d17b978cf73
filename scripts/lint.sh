#!/usr/bin/env bash
# The one lint command: protobuf style (buf lint, STANDARD), breaking API changes against the
# previous commit of main when it has protos, and ESLint over every TypeScript package.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=node_modules/.bin
"$bin/buf" lint proto
bash scripts/buf-breaking.sh
"$bin/tsc" -p tsconfig.tests.json
"$bin/eslint" --max-warnings 0 .
