# Spillway gateway image (also runs the Azure OpenAI simulator for the compose demo).
#   docker build -t spillway .          podman build --format docker -t spillway .
# (podman's default OCI format drops HEALTHCHECK; `--format docker` or BUILDAH_FORMAT=docker keeps it.)

# ---- build: full install (typescript, the Node 24 binary package), compile to dist/ ----
FROM docker.io/library/node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build.mjs scripts/copy-assets.mjs scripts/
COPY gateway gateway
COPY shared shared
RUN npm run build

# ---- production dependencies only (no devDependencies: no typescript, no `node` binary package) ----
FROM docker.io/library/node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: no install script of a runtime dependency is needed (msgpackr-extract ships prebuilds).
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# ---- runtime ----
FROM docker.io/library/node:24-bookworm-slim
ENV NODE_ENV=production PORT=8080
WORKDIR /app
# Owned by root, read-only to the `node` user the process runs as.
COPY package.json ./
COPY --from=deps /app/node_modules node_modules
COPY --from=build /app/dist dist
USER node
EXPOSE 8080
# Liveness via node's own fetch (slim images have no curl). Compose may override it (see compose.yml).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Exec form: node is PID 1 and receives SIGTERM itself (it drains, then exits 0). No shell, no npm.
# Open files: 2 per stream (client and upstream), so 10 000 streams need about 21 000; Node raises its
# soft limit to the hard one the runtime gives (Docker's default hard limit: 524 288 or more; else
# `docker run --ulimit nofile=65536:65536`, or `ulimits` in compose.yml).
ENTRYPOINT ["node", "dist/gateway/main.js"]
