#!/usr/bin/env bash
# Installs the workspace from the lockfile, generates code from proto/ and builds every package.
# Safe to run again: pnpm and tsc skip what is already up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pnpm.sh
if [ -f pnpm-lock.yaml ]; then
  pnpm install --frozen-lockfile --reporter=append-only
else
  pnpm install --reporter=append-only
fi
bash scripts/build.sh
