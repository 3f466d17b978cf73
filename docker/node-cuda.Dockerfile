# Node 20 on an NVIDIA CUDA 12 runtime: the image for trainer workers (Kubernetes Jobs on the GPU
# node pool), built with the engine's CUDA backend.
#   docker build -f docker/node-cuda.Dockerfile -t lathe/node-cuda .
#   docker run --init --gpus all lathe/node-cuda <worker entry point>

ARG NODE_IMAGE=node:20-bookworm-slim
ARG CUDA_VERSION=12.4.1
ARG UBUNTU=ubuntu22.04

# Node comes from the official Node image (a self-contained binary; Ubuntu 22.04's glibc is newer
# than the one it needs), so no extra apt source is added.
FROM ${NODE_IMAGE} AS node

# ---- build: the devel image has nvcc and the cuBLAS headers the CUDA backend compiles against ----
FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS build
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ cmake \
 && rm -rf /var/lib/apt/lists/*
# No GPU is visible during `docker build`, so name the architectures to compile for
# (CMake reads CUDAARCHS): A100, A10/RTX 30, L4/L40/RTX 40, H100/H200.
ARG CUDA_ARCHITECTURES="80;86;89;90"
ENV CUDAARCHS=${CUDA_ARCHITECTURES}
RUN npm install -g pnpm@9.15.9
ENV CI=true
WORKDIR /app
COPY pnpm-lock.yaml pnpm-workspace.yaml .npmrc ./
RUN pnpm fetch --reporter=append-only
COPY . .
RUN find . -name node_modules -type d -prune -exec rm -rf {} + \
 && bash scripts/setup.sh
# Same dev-dependency prune as node.Dockerfile.
RUN find . -name node_modules -type d -prune -exec rm -rf {} + \
 && pnpm install --prod --frozen-lockfile --offline --reporter=append-only

# ---- runtime: CUDA runtime libraries (cudart, cuBLAS/cuBLASLt), no compiler ----
FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}
COPY --from=node /usr/local/bin/node /usr/local/bin/node
ENV NODE_ENV=production \
    LATHE_DATA_DIR=/var/lib/lathe \
    LATHE_GRPC_HOST=0.0.0.0 \
    LATHE_GRPC_PORT=50051
# Same uid/gid as the CPU image, so both share one podSecurityContext.
RUN groupadd --system --gid 10001 lathe \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/lathe --shell /usr/sbin/nologin lathe \
 && mkdir -p /var/lib/lathe \
 && chown 10001:10001 /var/lib/lathe
WORKDIR /app
COPY --from=build /app /app
USER 10001:10001
EXPOSE 50051
# See node.Dockerfile on SIGTERM and PID 1.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node"]
CMD ["cli/dist/main.js", "--help"]
