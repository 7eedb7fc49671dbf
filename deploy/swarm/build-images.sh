#!/usr/bin/env bash
# Builds every image the swarm stacks (stack.yml, ha.yml) name and prints their names, one a line
# on stdout (the builds' output goes to stderr), so an operator can push them to a registry or
# carry them to every node:
#   APP_TAG=v1 bash deploy/swarm/build-images.sh | xargs docker save | ssh node2 docker load
# Built here: the app and nginx (as docker-compose.yml builds them) and a Patroni member (Patroni
# on the Postgres image, deploy/swarm/patroni/). Used as they are: the Postgres, etcd and HAProxy
# images, pulled when missing. Base images: the official ones, or what the environment names
# (NODE_IMAGE, NGINX_IMAGE, POSTGRES_IMAGE, ETCD_IMAGE, HAPROXY_IMAGE), or, when it exists,
# deploy/airgap/images.env (the stand-ins for machines with no registry: deploy/airgap/build.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tag=${APP_TAG:-latest}

# The environment first, then the stand-ins' file, then the official images.
from_env_file() {
  [ -f "$repo/deploy/airgap/images.env" ] || return 0
  sed -n "s/^$1=//p" "$repo/deploy/airgap/images.env" | tail -n 1
}
pick() {
  local value=${!1:-}
  [ -n "$value" ] || value=$(from_env_file "$1")
  printf '%s' "${value:-$2}"
}
NODE_IMAGE=$(pick NODE_IMAGE node:24-bookworm-slim)
NGINX_IMAGE=$(pick NGINX_IMAGE nginx:stable-bookworm)
POSTGRES_IMAGE=$(pick POSTGRES_IMAGE postgres:15-bookworm)
ETCD_IMAGE=$(pick ETCD_IMAGE gcr.io/etcd-development/etcd:v3.5.17)
HAPROXY_IMAGE=$(pick HAPROXY_IMAGE haproxy:2.8-bookworm)

# The classic builder: BuildKit needs the buildx plugin, which Debian's docker.io lacks.
export DOCKER_BUILDKIT=0
build() {
  local image=$1; shift
  echo "build-images: $image" >&2
  docker build -q "$@" -t "$image" >&2
}
present_or_pull() {
  if ! docker image inspect "$1" >/dev/null 2>&1; then
    echo "build-images: pulling $1" >&2
    docker pull -q "$1" >&2
  fi
}

present_or_pull "$POSTGRES_IMAGE"
present_or_pull "$ETCD_IMAGE"
present_or_pull "$HAPROXY_IMAGE"
build "koa-auth-stack-app:$tag" --build-arg "NODE_IMAGE=$NODE_IMAGE" "$repo"
build "koa-auth-stack-nginx:$tag" --build-arg "NGINX_IMAGE=$NGINX_IMAGE" "$repo/nginx"
build "koa-auth-stack-patroni:$tag" --build-arg "POSTGRES_IMAGE=$POSTGRES_IMAGE" "$here/patroni"

# Every image the stacks name, as they name them (deploy with the same APP_TAG and, for other base
# images than the official ones, the same POSTGRES_IMAGE, ETCD_IMAGE and HAPROXY_IMAGE).
printf '%s\n' "koa-auth-stack-app:$tag" "koa-auth-stack-nginx:$tag" "koa-auth-stack-patroni:$tag" \
  "$POSTGRES_IMAGE" "$ETCD_IMAGE" "$HAPROXY_IMAGE"
