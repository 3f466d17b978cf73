# syntax=docker/dockerfile:1.7
# Node 20 on an NVIDIA CUDA 12 runtime: the image of the trainer's training Jobs (on the GPU node
# pool) and of the gateway when it serves on GPUs (llama.cpp's CUDA backend, in node-llama-cpp).
#   docker build -f docker/node-cuda.Dockerfile -t lathe/node-cuda .
#   docker run --init --gpus all lathe/node-cuda services/gateway/dist/main.js
#
# THE ENGINE'S CUDA BACKEND DOES NOT EXIST YET (libs/engine builds its CPU backend only), so this
# image builds the engine CPU-only by default: ENGINE_CUDA=OFF. Once the backend lands, build with
#   --build-arg ENGINE_CUDA=ON [--build-arg CUDA_ARCHITECTURES="80;90"]
# and the engine compiles for sm_80 (A100) and sm_90 (H100/H200). Until then training Jobs on GPU
# nodes run on the CPU engine, and only the gateway's llama.cpp uses the GPU.
#
# Base images: pinned releases. Pin them by digest where you build (we cannot resolve digests
# where this file is written, and will not invent them):
#   --build-arg NODE_IMAGE=node:20.18.1-bookworm-slim@sha256:…
#   --build-arg CUDA_DEVEL_IMAGE=nvidia/cuda:12.4.1-devel-ubuntu22.04@sha256:…
#   --build-arg CUDA_RUNTIME_IMAGE=nvidia/cuda:12.4.1-runtime-ubuntu22.04@sha256:…
ARG NODE_IMAGE=node:20.18.1-bookworm-slim
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.4.1-devel-ubuntu22.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.4.1-runtime-ubuntu22.04
ARG PNPM_VERSION=9.15.9

# Node comes from the official Node image (a self-contained binary; Ubuntu 22.04's glibc is newer
# than the one it needs), so no extra apt source is added.
FROM ${NODE_IMAGE} AS node

# ---- build: the devel image has nvcc and the cuBLAS headers a CUDA build compiles against ----
FROM ${CUDA_DEVEL_IMAGE} AS build
ARG PNPM_VERSION
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ cmake \
 && rm -rf /var/lib/apt/lists/*
# OFF until libs/engine has a CUDA backend (see above). No GPU is visible during `docker build`,
# so the architectures are named: CMake reads CUDAARCHS.
ARG ENGINE_CUDA=OFF
ARG CUDA_ARCHITECTURES="80;90"
ENV CUDAARCHS=${CUDA_ARCHITECTURES}
RUN npm install -g "pnpm@${PNPM_VERSION}"
ENV CI=true
WORKDIR /src
COPY pnpm-lock.yaml pnpm-workspace.yaml ./
RUN pnpm fetch --reporter=append-only
COPY . .
# Configuring the engine first records LATHE_CUDA in its CMake cache, which scripts/build.sh then
# reuses. Today LATHE_CUDA=ON stops the build with "src/cuda/ is not written yet": on purpose.
RUN pnpm install --offline --frozen-lockfile --reporter=append-only \
 && cmake -S libs/engine -B libs/engine/build -DCMAKE_BUILD_TYPE=Release -DLATHE_CUDA="${ENGINE_CUDA}" \
 && bash scripts/build.sh
# The same pruned install and layout as node.Dockerfile.
RUN pnpm --filter @lathe/cli --prod --offline deploy /app/cli \
 && mkdir -p /app/services \
 && for s in dataset synthgen trainer evaluator registry gateway; do ln -s "../cli/node_modules/@lathe/$s" "/app/services/$s"; done \
 && rm -rf /app/cli/src /app/cli/test /app/cli/tsconfig*.json /app/cli/*.tsbuildinfo \
 && cp docker/healthcheck.mjs /app/cli/healthcheck.mjs

# ---- runtime: CUDA runtime libraries (cudart, cuBLAS/cuBLASLt), no compiler ----
FROM ${CUDA_RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG ENGINE_CUDA=OFF
LABEL org.opencontainers.image.title="lathe-cuda" \
      org.opencontainers.image.description="Lathe services on an NVIDIA CUDA 12 runtime (trainer Jobs, GPU serving)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dev.lathe.engine.cuda="${ENGINE_CUDA}"
COPY --from=node /usr/local/bin/node /usr/local/bin/node
ENV NODE_ENV=production \
    LATHE_DATA_DIR=/var/lib/lathe \
    LATHE_GRPC_HOST=0.0.0.0 \
    LATHE_GRPC_PORT=50051 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Same uid/gid as the CPU image, so both share one podSecurityContext.
RUN groupadd --system --gid 10001 lathe \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/lathe --shell /usr/sbin/nologin lathe \
 && mkdir -p /var/lib/lathe \
 && chown 10001:10001 /var/lib/lathe
WORKDIR /app
COPY --from=build /app /app
USER 10001:10001
EXPOSE 50051 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "cli/healthcheck.mjs"]
# See node.Dockerfile on SIGTERM and PID 1.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node"]
CMD ["cli/dist/main.js", "--help"]
