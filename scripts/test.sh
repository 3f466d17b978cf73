#!/usr/bin/env bash
# Runs every test. Tests reach Postgres and NATS through LATHE_TEST_PG_URL / LATHE_TEST_NATS_URL;
# when those are unset and the servers of this kind of machine answer on 127.0.0.1, they are
# used (and named here), otherwise @lathe/testing falls back to testcontainers.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${LATHE_TEST_PG_URL:-}" ] && pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  export LATHE_TEST_PG_URL="postgres://postgres@127.0.0.1:5432/postgres"
  echo "tests use Postgres at $LATHE_TEST_PG_URL"
fi
if [ -z "${LATHE_TEST_NATS_URL:-}" ] && (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
  export LATHE_TEST_NATS_URL="nats://127.0.0.1:4222"
  echo "tests use NATS at $LATHE_TEST_NATS_URL"
fi
# System packages the tests need, installed when missing and we may (root with apt-get):
# PyTorch for the engine's reference tests, NLTK for the Porter stemmer and ROUGE reference tests,
# nats-server for the NATS-restart test, tmux for the terminal review of lathe synth, chromium
# for the console.
need=()
/usr/bin/python3 -c 'import torch' 2>/dev/null || need+=(python3-torch)
/usr/bin/python3 -c 'import nltk' 2>/dev/null || need+=(python3-nltk)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
# chromium for the web console's browser tests (playwright-core drives Debian's).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} for the tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
  else
    echo "the tests need: ${need[*]} (Debian packages); install them and run again" >&2
    exit 1
  fi
fi

# The engine's C++ tests (gradient checks, golden files from the PyTorch reference).
node libs/engine/dev/golden-models.mjs > /dev/null
libs/engine/build/lathe_engine_test
exec node_modules/.bin/vitest run "$@"
