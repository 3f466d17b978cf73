# Base image for every Lathe service on CPU: one image, the service is chosen by CMD.
#   docker build -f docker/node.Dockerfile -t lathe/node .
#   docker run --init -p 50051:50051 lathe/node services/registry/dist/main.js

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: install from the lockfile, generate code from proto/, compile every package ----
FROM ${NODE_IMAGE} AS build
# Toolchain for native addons (node-gyp needs python3/make/g++; the engine's addon uses cmake).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ cmake \
 && rm -rf /var/lib/apt/lists/*
# scripts/pnpm.sh uses the pnpm on PATH when it is major 9; pin the same release it pins.
RUN npm install -g pnpm@9.15.9
ENV CI=true
WORKDIR /app
# Fetch packages from the lockfile alone first, so this layer stays cached until the lockfile changes.
COPY pnpm-lock.yaml pnpm-workspace.yaml .npmrc ./
RUN pnpm fetch --reporter=append-only
COPY . .
# Drop any node_modules that came with the build context (they point at the host's store).
RUN find . -name node_modules -type d -prune -exec rm -rf {} + \
 && bash scripts/setup.sh
# Prune dev dependencies (buf, tsc, vitest...): a clean production install from the local store.
# `pnpm install --prod` over a full install leaves dev packages in node_modules/.pnpm, hence the rm.
RUN find . -name node_modules -type d -prune -exec rm -rf {} + \
 && pnpm install --prod --frozen-lockfile --offline --reporter=append-only

# ---- runtime ----
FROM ${NODE_IMAGE}
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
# Services drain on SIGTERM for LATHE_SHUTDOWN_GRACE_MS. Node as PID 1 gets the signal because the
# services install a handler; it does not reap orphaned grandchildren, so use `docker run --init`
# (Kubernetes: shareProcessNamespace or a tini entrypoint) if a service ever spawns daemons.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node"]
# No sensible default service: pass one, e.g. services/registry/dist/main.js.
CMD ["cli/dist/main.js", "--help"]
