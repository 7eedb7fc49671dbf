#!/usr/bin/env bash
# Checks that the airgap stand-in images behave like the official ones where the stack relies
# on it. build.sh runs it for every image it (re)builds; run it by hand with
#   bash deploy/airgap/verify.sh [node|postgres|nginx|prometheus|etcd|haproxy|all]
# Containers are reached only through ports published on 127.0.0.1, and everything it creates
# (containers, volumes, temp dirs) is removed on exit.
set -euo pipefail

PREFIX=koa-auth-stack-airgap
NODE_IMAGE=$PREFIX/node:24
POSTGRES_IMAGE=$PREFIX/postgres:15
NGINX_IMAGE=$PREFIX/nginx:1.22
PROMETHEUS_IMAGE=$PREFIX/prometheus:2.42
ETCD_IMAGE=$PREFIX/etcd:3.4
HAPROXY_IMAGE=$PREFIX/haproxy:2.6
TAG=koa-airgap-verify-$$

say() { echo "verify: $*"; }
fail() { echo "verify: FAILED: $*" >&2; exit 1; }

containers=() volumes=() tmpdirs=()
cleanup() {
  local c
  for c in ${containers[@]+"${containers[@]}"}; do docker rm -f -v "$c" >/dev/null 2>&1 || true; done
  for c in ${volumes[@]+"${volumes[@]}"}; do docker volume rm "$c" >/dev/null 2>&1 || true; done
  for c in ${tmpdirs[@]+"${tmpdirs[@]}"}; do rm -rf "$c"; done
}
trap cleanup EXIT

# start NAME DOCKER-RUN-ARGS...: docker run -d; sets $c to the container's name (not echoed:
# the cleanup list must be filled in this shell, not in a $(...) subshell).
c=
start() {
  c=$TAG-$1; shift
  containers+=("$c")
  docker run -d --name "$c" "$@" >/dev/null
}

# http_get URL: the body (curl, or bash's /dev/tcp where curl is missing; HTTP/1.0, 127.0.0.1).
http_get() {
  if command -v curl >/dev/null; then curl -fsS --max-time 2 "$1"; return; fi
  local hostport=${1#http://} path=/${1#http://*/} resp
  hostport=${hostport%%/*}
  exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "${hostport%:*}" >&3
  resp=$(timeout 2 cat <&3) || true
  exec 3<&-
  grep -q '^HTTP/1\.[01] 200' <<<"$resp" || return 1
  sed '1,/^\r\{0,1\}$/d' <<<"$resp"
}

host_port() { docker port "$1" "$2" | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' | head -n1; }
running() { [ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }
seconds_since() { echo "$(($(date +%s%N) / 1000000 - $1))"; }
now_ms() { echo "$(($(date +%s%N) / 1000000))"; }

# timed_stop NAME: docker stop must be quick (the stop signal is handled, no 10 s kill timeout).
timed_stop() {
  local t0; t0=$(now_ms)
  docker stop "$1" >/dev/null
  local ms; ms=$(seconds_since "$t0")
  [ "$ms" -lt 3000 ] || fail "docker stop $1 took ${ms} ms"
  say "  docker stop took ${ms} ms"
}

# ---------------------------------------------------------------------------------------------
verify_node() {
  say "$NODE_IMAGE"
  local out
  out=$(docker run --rm "$NODE_IMAGE" sh -c 'node --version; npm --version; npx --version; id node; echo "$HOME:$(getent passwd node | cut -d: -f6)"')
  say "  $(tr '\n' ' ' <<<"$out")"
  grep -qx 'v24\.[0-9.]*' <<<"$(sed -n 1p <<<"$out")" || fail "node --version: $out"
  grep -qx '11\.[0-9.]*' <<<"$(sed -n 2p <<<"$out")" || fail "npm --version: $out"
  grep -q '^uid=1000(node) gid=1000(node)' <<<"$out" || fail "id node: $out"
  grep -q ':/home/node$' <<<"$out" || fail "home of node: $out"
  # Entrypoint as in the official image: a bare option or script runs node.
  [ "$(docker run --rm "$NODE_IMAGE" -p '1 + 1')" = 2 ] || fail "docker run IMAGE -p ... does not run node"
  [ "$(docker run --rm -u node "$NODE_IMAGE" node -e 'console.log(require("os").userInfo().username)')" = node ] ||
    fail "running as the node user"
}

verify_postgres() {
  say "$POSTGRES_IMAGE"
  local vol=$TAG-pgdata port url out psql_host=() t0
  volumes+=("$vol")
  # psql from the host when it has one, else the image's psql in the host's network namespace.
  if command -v psql >/dev/null; then psql_host=(psql); else psql_host=(docker run --rm --network host "$POSTGRES_IMAGE" psql); fi

  # wait_ready NAME: the testcontainers health check (psql over the unix socket) succeeds.
  wait_ready() {
    for _ in $(seq 1 120); do
      if docker exec "$1" sh -c "PGPASSWORD=test psql -U test -d test -c 'SELECT 1;'" >/dev/null 2>&1; then return 0; fi
      running "$1" || { docker logs "$1" 2>&1 | tail -n 30 >&2; fail "$1 exited"; }
      sleep 0.5
    done
    docker logs "$1" 2>&1 | tail -n 30 >&2; fail "$1 not ready after 60 s"
  }

  t0=$(now_ms)
  start pg -v "$vol:/var/lib/postgresql/data" -e POSTGRES_USER=test -e POSTGRES_PASSWORD=test \
    -e POSTGRES_DB=test -p 127.0.0.1::5432 "$POSTGRES_IMAGE"
  wait_ready "$c"
  say "  first start ready (testcontainers' psql check passes) after $(seconds_since "$t0") ms"
  docker logs "$c" 2>&1 | grep -q 'database system is ready to accept connections' || fail "no 'ready to accept connections' in the log"
  docker exec "$c" pg_isready -U test -d test >/dev/null || fail "pg_isready"
  port=$(host_port "$c" 5432/tcp)
  url="postgresql://test:test@127.0.0.1:$port/test"
  out=$("${psql_host[@]}" "$url" -Atc 'select version()') || fail "psql over TCP with the password"
  grep -q '^PostgreSQL 15' <<<"$out" || fail "version: $out"
  say "  over TCP: $(cut -c1-40 <<<"$out")..."
  [ "$("${psql_host[@]}" "$url" -Atc "select current_user || ' ' || pg_encoding_to_char(encoding) || ' ' || datdba::regrole from pg_database where datname = 'test'")" = "test UTF8 test" ] ||
    fail "user/encoding/owner of the test database"
  if out=$(PGCONNECT_TIMEOUT=5 "${psql_host[@]}" "postgresql://test:wrong@127.0.0.1:$port/test" -c 'select 1' 2>&1); then
    fail "a wrong password was accepted over TCP"
  fi
  grep -q 'password authentication failed' <<<"$out" || fail "wrong password: unexpected error: $out"
  say "  wrong password over TCP refused"
  "${psql_host[@]}" "$url" -qc "create table kept (v text); insert into kept values ('still here')" || fail "write"
  timed_stop "$c"

  # Restart on the same volume: no re-initialisation, data kept.
  docker start "$c" >/dev/null
  wait_ready "$c"
  [ "$(docker logs "$c" 2>&1 | grep -c 'Skipping initialization')" = 1 ] || fail "restart did not skip initialisation"
  [ "$(docker exec "$c" psql -U test -d test -Atc 'select v from kept')" = "still here" ] || fail "data lost on restart"
  say "  restart kept the data, no re-init"
  timed_stop "$c"

  # Extra server args: `IMAGE postgres -c ...` and bare `-c ...`; trust without a password;
  # an initdb.d script through the private temporary server.
  local initdir; initdir=$(mktemp -d); tmpdirs+=("$initdir")
  echo 'create table from_initdb (id int);' >"$initdir/10-schema.sql"
  printf '#!/bin/sh\nset -e\npsql -v ON_ERROR_STOP=1 -c "insert into from_initdb values (42)"\n' >"$initdir/20-data.sh"
  chmod 0755 "$initdir/20-data.sh"; chmod 0755 "$initdir"; chmod 0644 "$initdir/10-schema.sql"
  start pg-args -e POSTGRES_USER=test -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test \
    -v "$initdir:/docker-entrypoint-initdb.d:ro" "$POSTGRES_IMAGE" postgres -c max_connections=200
  wait_ready "$c"
  [ "$(docker exec "$c" psql -U test -d test -Atc 'show max_connections')" = 200 ] || fail "postgres -c args not passed"
  [ "$(docker exec "$c" psql -U test -d test -Atc 'select id from from_initdb')" = 42 ] || fail "initdb.d scripts"
  say "  'postgres -c ...' args, POSTGRES_HOST_AUTH_METHOD=trust and initdb.d scripts work"
  start pg-bare -e POSTGRES_USER=test -e POSTGRES_PASSWORD=test -e POSTGRES_DB=test \
    "$POSTGRES_IMAGE" -c max_connections=50
  wait_ready "$c"
  [ "$(docker exec "$c" psql -U test -d test -Atc 'show max_connections')" = 50 ] || fail "bare -c args not passed"
  say "  bare '-c ...' args work"

  # Failed initialisation must stop the container with a clear error, not start a server.
  # expect_init_failure NAME DOCKER-RUN-ARGS...: sets $out to the container's output.
  expect_init_failure() {
    local name=$TAG-$1 rc=0; shift
    containers+=("$name")
    out=$(timeout 60 docker run --name "$name" "$@" 2>&1) || rc=$?
    [ "$rc" != 0 ] || fail "$name: started although its initialisation should fail"
    [ "$rc" != 124 ] || fail "$name: still running after 60 s although its initialisation should fail"
  }
  expect_init_failure pg-nopw "$POSTGRES_IMAGE"
  grep -q 'You must specify POSTGRES_PASSWORD' <<<"$out" || fail "missing-password error unclear: $out"
  expect_init_failure pg-baddb -e POSTGRES_PASSWORD=x -e POSTGRES_DB=template1 "$POSTGRES_IMAGE"
  grep -q 'CREATE DATABASE template1 failed' <<<"$out" || fail "CREATE DATABASE error unclear: $out"
  say "  missing POSTGRES_PASSWORD and a failing CREATE DATABASE stop the container with a clear error"
}

verify_nginx() {
  say "$NGINX_IMAGE"
  local port body='' tpl
  tpl=$(mktemp -d); tmpdirs+=("$tpl"); chmod 0755 "$tpl"
  # shellcheck disable=SC2016  # nginx's $host must survive envsubst; ${GREETING} must not
  printf 'server { listen 8080; location / { return 200 "${GREETING} $host\\n"; } }\n' >"$tpl/greet.conf.template"
  chmod 0644 "$tpl/greet.conf.template"
  start nginx -p 127.0.0.1::80 -p 127.0.0.1::8080 -e GREETING=hello -v "$tpl:/etc/nginx/templates:ro" "$NGINX_IMAGE"
  port=$(host_port "$c" 80/tcp)
  for _ in $(seq 1 40); do
    body=$(http_get "http://127.0.0.1:$port/" 2>/dev/null) && break
    running "$c" || { docker logs "$c" 2>&1 | tail -n 30 >&2; fail "nginx exited"; }
    sleep 0.25
  done
  grep -q 'Welcome to nginx!' <<<"$body" || fail "default page not served on 127.0.0.1:$port"
  say "  default page served on 127.0.0.1:$port"
  [ "$(http_get "http://127.0.0.1:$(host_port "$c" 8080/tcp)/")" = "hello 127.0.0.1" ] ||
    fail "/etc/nginx/templates not rendered by envsubst"
  say "  /docker-entrypoint.d/ hooks ran (templates rendered)"
  docker exec "$c" nginx -t 2>&1 | grep -q 'test is successful' || fail "nginx -t"
  [ "$(docker exec "$c" sh -c 'id -u nginx; id -g nginx')" = $'101\n101' ] || fail "nginx user is not 101:101"
  docker exec "$c" sh -c 'test ! -e /etc/nginx/sites-enabled/default && readlink /var/log/nginx/access.log' | grep -qx /dev/stdout ||
    fail "log symlinks / sites-enabled"
  sleep 0.2
  docker logs "$c" 2>/dev/null | grep -q '"GET / HTTP/1.1" 200' || fail "access log does not reach docker logs"
  say "  nginx -t passes, uid/gid 101, access log on stdout"
  timed_stop "$c"
}

verify_prometheus() {
  say "$PROMETHEUS_IMAGE"
  local port body=''
  # As the official image: the default command serves the UI and API on 9090 and scrapes itself.
  start prometheus -p 127.0.0.1::9090 "$PROMETHEUS_IMAGE"
  port=$(host_port "$c" 9090/tcp)
  for _ in $(seq 1 60); do
    body=$(http_get "http://127.0.0.1:$port/api/v1/targets" 2>/dev/null) && grep -q '"health":"up"' <<<"$body" && break
    running "$c" || { docker logs "$c" 2>&1 | tail -n 30 >&2; fail "prometheus exited"; }
    sleep 0.5
  done
  grep -q '"health":"up"' <<<"$body" || fail "prometheus does not scrape itself (127.0.0.1:$port/api/v1/targets)"
  say "  API on 127.0.0.1:$port, scraping itself"
  [ "$(docker exec "$c" id -u)" = 65534 ] || fail "not running as nobody"
  docker exec "$c" promtool --version >/dev/null || fail "promtool missing"
  say "  runs as nobody; promtool present"
  timed_stop "$c"
}

verify_etcd() {
  say "$ETCD_IMAGE"
  local ok=''
  # Configured by ETCD_* variables alone, as the stack does; etcdctl answers against it.
  start etcd -e ETCD_NAME=verify -e ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379 \
    -e ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:2379 "$ETCD_IMAGE"
  for _ in $(seq 1 40); do
    docker exec "$c" etcdctl put verify ok >/dev/null 2>&1 && ok=$(docker exec "$c" etcdctl get --print-value-only verify) && break
    running "$c" || { docker logs "$c" 2>&1 | tail -n 30 >&2; fail "etcd exited"; }
    sleep 0.5
  done
  [ "$ok" = ok ] || fail "etcdctl cannot write and read a key"
  [[ $(docker exec "$c" etcd --version) == 'etcd Version: 3.'* ]] || fail "not etcd 3"
  say "  etcd 3 from ETCD_* variables; etcdctl (v3 API) writes and reads"
  timed_stop "$c"
}

verify_haproxy() {
  say "$HAPROXY_IMAGE"
  local dir port
  dir=$(mktemp -d); tmpdirs+=("$dir")
  printf 'defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\nfrontend f\n  bind :8080\n  http-request return status 200 content-type text/plain string ok\n' >"$dir/haproxy.cfg"
  chmod 0644 "$dir/haproxy.cfg"
  # The official layout: the configuration at /usr/local/etc/haproxy/haproxy.cfg, the default command.
  start haproxy -p 127.0.0.1::8080 -v "$dir/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" "$HAPROXY_IMAGE"
  port=$(host_port "$c" 8080/tcp)
  for _ in $(seq 1 20); do
    [ "$(http_get "http://127.0.0.1:$port/" 2>/dev/null)" = ok ] && break
    running "$c" || { docker logs "$c" 2>&1 | tail -n 30 >&2; fail "haproxy exited"; }
    sleep 0.5
  done
  [ "$(http_get "http://127.0.0.1:$port/")" = ok ] || fail "haproxy does not serve its mounted configuration"
  [ "$(docker exec "$c" id -un)" = haproxy ] || fail "not running as haproxy"
  say "  serves /usr/local/etc/haproxy/haproxy.cfg as user haproxy"
  timed_stop "$c"
}

what=${1:-all}
case "$what" in
  node) verify_node ;;
  postgres) verify_postgres ;;
  nginx) verify_nginx ;;
  prometheus) verify_prometheus ;;
  etcd) verify_etcd ;;
  haproxy) verify_haproxy ;;
  all) verify_node; verify_postgres; verify_nginx; verify_prometheus; verify_etcd; verify_haproxy ;;
  *) echo "usage: verify.sh [node|postgres|nginx|prometheus|etcd|haproxy|all]" >&2; exit 2 ;;
esac
say "$what: OK"
