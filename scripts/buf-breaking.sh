#!/usr/bin/env bash
# `buf breaking` against the API as it was: LATHE_BUF_AGAINST (a git ref) when set, else the
# merge base with origin/main on a branch, else the previous commit. Skipped, saying why, when
# that commit has no protos yet (the first version of the API).
set -euo pipefail
cd "$(dirname "$0")/.."
ref="${LATHE_BUF_AGAINST:-}"
if [ -z "$ref" ]; then
  if git rev-parse -q --verify origin/main >/dev/null && [ "$(git rev-parse HEAD)" != "$(git rev-parse origin/main)" ]; then
    ref=$(git merge-base HEAD origin/main)
  else
    ref=$(git rev-parse -q --verify HEAD~1 || true)
  fi
fi
if [ -z "$ref" ] || ! sha=$(git rev-parse -q --verify "$ref^{commit}") ; then
  echo "buf breaking: skipped (no earlier commit to compare with)"; exit 0
fi
if [ -z "$(git ls-tree -d "$sha" proto/lathe)" ]; then
  echo "buf breaking: skipped ($sha has no proto/lathe yet: this is the API's first version)"; exit 0
fi
node_modules/.bin/buf breaking proto --against ".git#ref=$sha,subdir=proto"
echo "buf breaking: no breaking changes against $sha"
