# syntax=docker/dockerfile:1.7
# The Node runtime image of every Lathe service and the CLI: one image, the service is chosen by
# the command (`services/<name>/dist/main.js`, `cli/dist/main.js`).
#   docker build -f docker/node.Dockerfile -t lathe/node .
#   docker run --init -p 50051:50051 -e LATHE_API_KEYS=k=dev lathe/node services/registry/dist/main.js
#   docker run --init -e LATHE_PG_URL=… lathe/node services/registry/dist/main.js migrate
#
# Base image: a pinned release. Pin it by digest where you build (we cannot resolve digests
# where this file is written, and will not invent one):
#   --build-arg NODE_IMAGE=node:20.18.1-bookworm-slim@sha256:<digest of your mirror's copy>
ARG NODE_IMAGE=node:20.18.1-bookworm-slim
ARG PNPM_VERSION=9.15.9

# ---- build: install from the lockfile, generate code from proto/, compile every package ----
FROM ${NODE_IMAGE} AS build
ARG PNPM_VERSION
# Toolchain for native addons: node-gyp needs python3, make and g++; the engine's addon uses cmake.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ cmake \
 && rm -rf /var/lib/apt/lists/*
RUN npm install -g "pnpm@${PNPM_VERSION}"
ENV CI=true
WORKDIR /src
# Fetch packages from the lockfile alone first, so this layer stays cached until the lockfile changes.
COPY pnpm-lock.yaml pnpm-workspace.yaml ./
RUN pnpm fetch --reporter=append-only
COPY . .
RUN pnpm install --offline --frozen-lockfile --reporter=append-only \
 && bash scripts/build.sh
# The pruned install: the CLI (which depends on every service) with production dependencies
# only, workspace packages copied in, no compiler, test runner or code generator. The services'
# entry points keep the paths the chart and the trainer's Jobs use (services/<name>/dist/main.js).
RUN pnpm --filter @lathe/cli --prod --offline deploy /app/cli \
 && mkdir -p /app/services \
 && for s in dataset synthgen trainer evaluator registry gateway; do ln -s "../cli/node_modules/@lathe/$s" "/app/services/$s"; done \
 && rm -rf /app/cli/src /app/cli/test /app/cli/tsconfig*.json /app/cli/*.tsbuildinfo \
 && cp docker/healthcheck.mjs /app/cli/healthcheck.mjs

# SBOM: `docker buildx build --sbom=true --provenance=true` attaches an SPDX SBOM and provenance
# from BuildKit's scanner; no tool for it is installed in the image.

# ---- runtime ----
FROM ${NODE_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="lathe" \
      org.opencontainers.image.description="Lathe services and CLI (Node runtime)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${NODE_IMAGE}"
ENV NODE_ENV=production \
    LATHE_DATA_DIR=/var/lib/lathe \
    LATHE_GRPC_HOST=0.0.0.0 \
    LATHE_GRPC_PORT=50051
# A fixed numeric uid so Kubernetes' runAsNonRoot can check it and volumes can use fsGroup 10001.
RUN groupadd --system --gid 10001 lathe \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/lathe --shell /usr/sbin/nologin lathe \
 && mkdir -p /var/lib/lathe \
 && chown 10001:10001 /var/lib/lathe
WORKDIR /app
# Code stays owned by root: the service user can read it but not change it.
COPY --from=build /app /app
USER 10001:10001
EXPOSE 50051 8080
# The standard gRPC health service of whatever service runs here (docker/healthcheck.mjs).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "cli/healthcheck.mjs"]
# Services drain on SIGTERM for LATHE_SHUTDOWN_GRACE_MS. Node as PID 1 gets the signal because the
# services install a handler; it does not reap orphaned grandchildren, so use `docker run --init`
# (Kubernetes: shareProcessNamespace or a tini entrypoint) if a service ever spawns daemons.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node"]
CMD ["cli/dist/main.js", "--help"]
