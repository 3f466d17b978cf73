# Sourced by the other scripts: defines `pnpm`, using the one on PATH when it is the pinned
# major version, else running the pinned release through npx (fetched from the npm registry once).
PNPM_VERSION=9.15.9
if command -v pnpm >/dev/null 2>&1 && [ "$(pnpm --version 2>/dev/null | cut -d. -f1)" = "9" ]; then
  :
else
  pnpm() { npx --yes "pnpm@${PNPM_VERSION}" "$@"; }
fi
