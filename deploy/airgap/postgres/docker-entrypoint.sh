#!/usr/bin/env bash
# Entrypoint of the postgres stand-in image. It follows the official postgres image's contract:
#   POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless
#   POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_DB (default: the user), PGDATA, POSTGRES_INITDB_ARGS,
#   POSTGRES_HOST_AUTH_METHOD (default scram-sha-256), the *_FILE variants (Docker secrets) and
#   /docker-entrypoint-initdb.d/*.sql, *.sql.gz, *.sql.xz, *.sh run once on first start.
# Unlike the official one it initialises WITHOUT a temporary server that accepts connections
# (initdb + `postgres --single`), so a health check never sees a half-initialised database.
# Only when initdb.d scripts exist is a temporary server started, listening on nothing but a
# unix socket in a private directory.
set -Eeuo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%F %T UTC')" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# file_env VAR [DEFAULT]: take VAR from itself, or from the file named by VAR_FILE.
file_env() {
  local var=$1 file_var="${1}_FILE" def=${2:-} val
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    die "both $var and $file_var are set (but are exclusive)"
  fi
  val=$def
  if [ -n "${!var:-}" ]; then
    val=${!var}
  elif [ -n "${!file_var:-}" ]; then
    val=$(<"${!file_var}")
  fi
  export "$var=$val"
  unset "$file_var"
}

# Arguments that only print something: hand them straight to postgres.
wants_help() {
  local arg
  for arg; do
    case "$arg" in -'?' | --help | --describe-config | -V | --version) return 0 ;; esac
  done
  return 1
}

setup_env() {
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  export PGDATA=${PGDATA:-/var/lib/postgresql/data}
  : "${POSTGRES_HOST_AUTH_METHOD:=}"
}

# As root: create the data and socket directories and give them to postgres (volumes may come
# in owned by root or by another uid).
prepare_dirs_as_root() {
  mkdir -p "$PGDATA" /var/run/postgresql
  chmod 00700 "$PGDATA" || :
  chmod 03775 /var/run/postgresql || :
  find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
}

check_env_for_init() {
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    cat >&2 <<'EOF'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
       connections without a password. This is *not* recommended.
EOF
    exit 1
  fi
  if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
    log "warning: POSTGRES_HOST_AUTH_METHOD=trust: every connection is accepted without a password"
  fi
}

init_cluster() {
  local auth_host=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
  local args=(--pgdata="$PGDATA" --username="$POSTGRES_USER" --encoding=UTF8 --locale=C.UTF-8
    --auth-local=trust --auth-host="$auth_host")
  log "initialising the database cluster in $PGDATA (superuser $POSTGRES_USER)"
  # POSTGRES_INITDB_ARGS is a word list by contract (e.g. "--data-checksums"); later args win.
  # shellcheck disable=SC2086
  if [ -n "$POSTGRES_PASSWORD" ]; then
    # The password reaches initdb through a pipe from a shell builtin: never in argv or a file.
    initdb "${args[@]}" $POSTGRES_INITDB_ARGS --pwfile=<(printf '%s' "$POSTGRES_PASSWORD")
  else
    initdb "${args[@]}" $POSTGRES_INITDB_ARGS
  fi
  # Password auth from anywhere over TCP, as the official image does (unix socket stays trust).
  printf '\nhost all all all %s\n' "$auth_host" >>"$PGDATA/pg_hba.conf"

  if [ "$POSTGRES_DB" != postgres ]; then
    log "creating database $POSTGRES_DB"
    local out
    # Single-user mode: no listening server at all. It runs as the bootstrap superuser
    # (= POSTGRES_USER), who thus owns the database, as with the official image.
    out=$(printf 'CREATE DATABASE "%s";\n\n' "${POSTGRES_DB//\"/\"\"}" |
      postgres --single -j -D "$PGDATA" postgres 2>&1) || { printf '%s\n' "$out" >&2; die "CREATE DATABASE failed"; }
    # Single-user mode exits 0 even when the statement failed: look at what it logged.
    if grep -qE '(ERROR|FATAL|PANIC):  ' <<<"$out"; then
      printf '%s\n' "$out" >&2
      die "CREATE DATABASE $POSTGRES_DB failed"
    fi
  fi
}

# Runs /docker-entrypoint-initdb.d/* against a temporary server that listens only on a unix
# socket in a private directory (so neither clients nor health checks can reach it).
run_initdb_scripts() {
  local f files=()
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in *.sh | *.sql | *.sql.gz | *.sql.xz) files+=("$f") ;; *) [ -e "$f" ] && log "ignoring $f" ;; esac
  done
  [ "${#files[@]}" -gt 0 ] || return 0

  local sockdir
  sockdir=$(mktemp -d)
  log "starting a temporary server (socket in $sockdir only) for /docker-entrypoint-initdb.d"
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories='$sockdir'" start
  # What scripts see, as with the official image.
  export PGHOST=$sockdir PGPORT=5432 PGUSER=$POSTGRES_USER PGDATABASE=$POSTGRES_DB
  export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
  local psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password)
  for f in "${files[@]}"; do
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then log "running $f"; "$f"
        else log "sourcing $f"; # shellcheck disable=SC1090
          . "$f"; fi ;;
      *.sql) log "running $f"; "${psql[@]}" -f "$f" ;;
      *.sql.gz) log "running $f"; gzip -dc "$f" | "${psql[@]}" ;;
      *.sql.xz) log "running $f"; xz -dc "$f" | "${psql[@]}" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD
  rmdir "$sockdir" 2>/dev/null || :
}

main() {
  [ "$#" -gt 0 ] || set -- postgres
  # `docker run IMAGE -c max_connections=200`: bare options mean "postgres with these options".
  if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
  if [ "$1" != postgres ] || wants_help "$@"; then exec "$@"; fi

  setup_env
  if [ "$(id -u)" = 0 ]; then
    prepare_dirs_as_root
    # Start over as the postgres user (setpriv is util-linux's gosu); the environment is kept.
    HOME=$(getent passwd postgres | cut -d: -f6)
    export HOME
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
  fi

  if [ -s "$PGDATA/PG_VERSION" ]; then
    log "PostgreSQL Database directory appears to contain a database; Skipping initialization"
  else
    check_env_for_init
    init_cluster
    run_initdb_scripts
    log "PostgreSQL init process complete; ready for start up."
  fi
  # The server needs no secrets from the environment.
  unset POSTGRES_PASSWORD
  exec "$@"
}

main "$@"
