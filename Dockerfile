# The app image: PM2 running a cluster of Koa workers.
#   docker build -t koa-auth-stack-app .
#   docker build --build-arg NODE_IMAGE=koa-auth-stack-airgap/node:24 .   (machines with no registry)
# Extra CA certificates for npm behind an intercepting proxy: see deploy/extra-ca/README.md.
ARG NODE_IMAGE=node:24-bookworm-slim

# --- dependencies, all of them (the build needs TypeScript) -------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# koa-jwt's p-any, replaced (package.json "overrides"; vendor/p-any/index.js says why).
COPY vendor/ ./vendor/
COPY deploy/extra-ca/ /tmp/extra-ca/
RUN set -e; \
    cat /tmp/extra-ca/*.pem /tmp/extra-ca/*.crt > /tmp/extra-ca.pem 2>/dev/null || true; \
    if [ -s /tmp/extra-ca.pem ]; then export NODE_EXTRA_CA_CERTS=/tmp/extra-ca.pem; fi; \
    npm ci --no-audit --no-fund --loglevel=warn; \
    rm -rf /tmp/extra-ca /tmp/extra-ca.pem /root/.npm

# --- compile TypeScript to dist/ ---------------------------------------------------------------
FROM deps AS build
COPY tsconfig.json tsconfig.build.json ./
COPY app ./app
RUN npm run build

# --- production dependencies only, without what never runs -------------------------------------
FROM deps AS prod-deps
RUN set -e; \
    npm prune --omit=dev --no-audit --no-fund --loglevel=warn; \
    find node_modules -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \
      -o -name '*.md' -o -name '*.markdown' -o -name '*.ts' -o -name '*.mts' -o -name '*.cts' \) -delete; \
    find node_modules -depth -type d \( -name test -o -name tests -o -name __tests__ -o -name docs \
      -o -name example -o -name examples \) -exec rm -rf {} +; \
    rm -rf node_modules/moment/min node_modules/moment/src node_modules/moment/dist \
      node_modules/moment-timezone/builds node_modules/zod/src node_modules/@types

# --- runtime ---------------------------------------------------------------------------------------
FROM ${NODE_IMAGE}
# MALLOC_ARENA_MAX=1: glibc's per-thread arenas each keep what their thread freed. It was set when
# node:crypto computed the argon2id hash: its 19 MiB block came from whichever libuv thread ran it, and
# every thread kept its own (a worker's RSS grew by ~100 MB under logins; docs/PERFORMANCE.md). The
# hash is @node-rs/argon2's now, whose blocks come from its own allocator (mimalloc), outside glibc's
# arenas; the setting stays for the rest of the process's malloc (Node's sockets, OpenSSL), which has
# not been measured apart. Set here, not in ecosystem.config.js: PM2 hands a worker its app env only
# after the process has started, too late for glibc.
# NODE_CLUSTER_SCHED_POLICY=none: the workers share the listening socket and accept their own
# connections. With Node's default (round-robin) PM2's process accepts each one and passes it to a
# worker over IPC, and nginx opens a fresh connection for every POST (common.conf: app_once): PM2
# took 0.16-0.18 ms of CPU per refresh and 0.5-0.7 ms per login, 0-0.1 ms now (docs/PERFORMANCE.md).
# Node's cluster module reads it when PM2's daemon loads it, so it must be in the container's
# environment.
ENV NODE_ENV=production \
    PORT=3000 \
    PATH=/app/node_modules/.bin:$PATH \
    PM2_HOME=/home/node/.pm2 \
    MALLOC_ARENA_MAX=1 \
    NODE_CLUSTER_SCHED_POLICY=none
WORKDIR /app
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ecosystem.config.js ./
COPY scripts/run.js scripts/healthcheck.js scripts/release.js ./scripts/
# Where the workers' Unix socket goes (a volume shared with nginx in docker-compose.yml). The link PM2
# starts workers from (the image's code until an upgrade activates another release; under docker
# compose the releases directory is a volume: scripts/release.js, README "Upgrades").
RUN set -e; \
    mkdir -p /run/koa-auth-stack /srv/koa-auth-stack/releases; \
    ln -s /app /srv/koa-auth-stack/current; \
    chown node:node /run/koa-auth-stack /srv/koa-auth-stack /srv/koa-auth-stack/releases; \
    chown -h node:node /srv/koa-auth-stack/current
ENV APP_RELEASE_LINK=/srv/koa-auth-stack/current
USER node
EXPOSE 3000
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 CMD ["node", "scripts/healthcheck.js"]
# pm2-runtime stays in the foreground as PID 1 and forwards SIGTERM/SIGINT to the workers.
CMD ["pm2-runtime", "start", "ecosystem.config.js"]
