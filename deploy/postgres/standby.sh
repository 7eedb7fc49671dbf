#!/usr/bin/env bash
# postgres-standby (docker compose --profile standby): a streaming replica of the primary, made and
# run with Postgres's own tools, in the official postgres image or the stand-in (deploy/airgap/).
#
#   first start   creates the replication role on the primary (or sets its password), copies the
#                 primary with pg_basebackup through a physical replication slot, and writes
#                 primary_conninfo / primary_slot_name / standby.signal;
#   every start   runs Postgres as a hot standby; once its WAL receiver streams, names it in the
#                 primary's synchronous_standby_names, so from then on every commit the primary
#                 acknowledges is on both servers;
#   docker stop   (compose stop/down) takes it out of synchronous_standby_names first, so the
#                 primary does not wait for a standby that is stopped on purpose.
# A standby that dies without being stopped (a crash, a lost machine) stays named: the primary's
# commits wait for it (routes that write answer 503) until it is back, which `restart:` does within
# seconds, or until an operator lowers the durability (README, "Failover"). That is the point of
# synchronous replication: no acknowledged write exists on one server only.
# After `SELECT pg_promote()` this server is the primary; it then has no standby of its own and
# stops touching synchronous_standby_names.
#
# Environment: POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB (the primary's superuser, as for the
# postgres service), REPLICATION_PASSWORD, each also as *_FILE (Docker secrets); PRIMARY_HOST
# (postgres), PRIMARY_PORT (5432), STANDBY_NAME (postgres_standby: its application_name, its slot,
# the name synchronous_standby_names holds). The replication role is `replicator`, as pg_hba.conf
# beside this file names it.
set -Eeuo pipefail

log() { printf '%s [standby] %s\n' "$(date -u '+%F %T UTC')" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# file_env VAR [DEFAULT]: VAR from itself, or from the file VAR_FILE names.
file_env() {
  local var=$1 file_var="${1}_FILE" def=${2:-}
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then die "both $var and $file_var are set"; fi
  if [ -n "${!file_var:-}" ]; then export "$var=$(<"${!file_var}")"; else export "$var=${!var:-$def}"; fi
  unset "$file_var"
}

file_env POSTGRES_USER postgres
file_env POSTGRES_PASSWORD
file_env POSTGRES_DB "$POSTGRES_USER"
file_env REPLICATION_PASSWORD
export PGDATA=${PGDATA:-/var/lib/postgresql/data}
PRIMARY_HOST=${PRIMARY_HOST:-postgres}
PRIMARY_PORT=${PRIMARY_PORT:-5432}
STANDBY_NAME=${STANDBY_NAME:-postgres_standby}
REPLICATION_USER=replicator
[[ $STANDBY_NAME =~ ^[a-z_][a-z0-9_]*$ ]] || die "STANDBY_NAME must be a plain lower-case identifier"
[ -n "$POSTGRES_PASSWORD" ] || die "POSTGRES_PASSWORD (the primary's superuser) is needed to set up replication"
[ -n "$REPLICATION_PASSWORD" ] || die "REPLICATION_PASSWORD is needed"
[ "$#" -gt 0 ] || set -- postgres

# Postgres runs as the postgres user, as both images' own entrypoints run it (setpriv is util-linux,
# present in both).
as_postgres() {
  if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups "$@"; else "$@"; fi
}

# The primary, as its superuser (setting up, and naming this standby synchronous). The password
# goes by the environment, never argv.
primary_sql() {
  PGPASSWORD=$POSTGRES_PASSWORD PGCONNECT_TIMEOUT=3 psql -X -q -t -A -v ON_ERROR_STOP=1 \
    -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$POSTGRES_USER" -d "$POSTGRES_DB" "$@"
}
# This server, over its Unix socket (pg_hba.conf: local trust).
local_sql() {
  PGCONNECT_TIMEOUT=3 psql -X -q -t -A -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$POSTGRES_USER" -d "$POSTGRES_DB" "$@"
}

# A string in postgresql.conf's syntax: backslashes and quotes escaped.
conf_string() {
  local s=${1//\\/\\\\}
  printf '%s' "${s//\'/\'\'}"
}

setup() {
  log "waiting for the primary at $PRIMARY_HOST:$PRIMARY_PORT"
  until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -t 2; do sleep 1; done
  # A primary still naming this standby (whose copy is gone: its volume was removed) would wait
  # for it on every commit, these setup statements' too, until the new copy streams.
  leave_synchronous
  # The role and its password from the environment (psql's \getenv keeps it out of argv). Its
  # pg_hba.conf line comes with the primary's hba_file.
  primary_sql -v role="$REPLICATION_USER" <<'SQL'
\getenv password REPLICATION_PASSWORD
SET synchronous_commit = local;
SELECT format('CREATE ROLE %I WITH REPLICATION LOGIN', :'role')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I WITH REPLICATION LOGIN PASSWORD %L', :'role', :'password') \gexec
SQL
  # A slot left by an earlier copy of this standby (its volume since removed) would hold WAL forever
  # and make pg_basebackup's --create-slot fail.
  primary_sql -v slot="$STANDBY_NAME" <<'SQL'
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = :'slot' AND NOT active;
SQL
  log "copying the primary (pg_basebackup, slot $STANDBY_NAME)"
  local conninfo="host=$PRIMARY_HOST port=$PRIMARY_PORT user=$REPLICATION_USER application_name=$STANDBY_NAME"
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA" 2>/dev/null || :
  chmod 0700 "$PGDATA"
  as_postgres env PGPASSWORD="$REPLICATION_PASSWORD" \
    pg_basebackup -d "$conninfo" -D "$PGDATA" --wal-method=stream --checkpoint=fast \
    --create-slot --slot="$STANDBY_NAME" --no-password
  # Standby settings, appended to the copied postgresql.auto.conf (a later line wins). The copy also
  # carries the primary's synchronous_standby_names naming this very standby: cleared, or, once
  # promoted, this server would wait for a standby it does not have. The password is quoted twice:
  # as a conninfo value, then inside a configuration string.
  local password=${REPLICATION_PASSWORD//\\/\\\\}
  password=${password//\'/\\\'}
  as_postgres tee -a "$PGDATA/postgresql.auto.conf" >/dev/null <<EOF
# postgres-standby (deploy/postgres/standby.sh)
primary_conninfo = '$(conf_string "$conninfo password='$password'")'
primary_slot_name = '$STANDBY_NAME'
synchronous_standby_names = ''
EOF
  as_postgres touch "$PGDATA/standby.signal"
  log "copy complete"
}

# Names this standby in the primary's synchronous_standby_names once its WAL receiver streams.
become_synchronous() {
  local recovery status
  for (( ; ; )); do
    # One question, one answer: t (a standby), f (promoted), nothing (not answering yet).
    recovery=$(local_sql -c 'SELECT pg_is_in_recovery()' 2>/dev/null || :)
    if [ "$recovery" = f ]; then break; fi
    if [ "$recovery" != t ]; then sleep 1; continue; fi
    status=$(local_sql -c 'SELECT status FROM pg_stat_wal_receiver' 2>/dev/null || :)
    if [ "$status" = streaming ]; then
      if primary_sql -v name="$STANDBY_NAME" >/dev/null <<'SQL'
SELECT format('ALTER SYSTEM SET synchronous_standby_names = %L', :'name')
  WHERE current_setting('synchronous_standby_names') IS DISTINCT FROM :'name' \gexec
SELECT pg_reload_conf();
SQL
      then
        log "streaming; the primary now waits for this standby on every commit (synchronous_standby_names = $STANDBY_NAME)"
        return 0
      fi
    fi
    sleep 1
  done
  log "not in recovery (promoted): no primary to replicate from"
}

# Out of the primary's synchronous_standby_names, when it names this standby.
leave_synchronous() {
  primary_sql -v name="$STANDBY_NAME" >/dev/null <<'SQL'
SELECT 'ALTER SYSTEM RESET synchronous_standby_names' WHERE current_setting('synchronous_standby_names') = :'name' \gexec
SELECT pg_reload_conf();
SQL
}

# docker stop: leave synchronous_standby_names first (if still a standby), then Postgres' fast
# shutdown.
pg_pid=
on_stop() {
  trap - INT TERM
  # Unless promoted (then the primary is this server, and names no one).
  if [ -n "$pg_pid" ] && [ "$(local_sql -c 'SELECT pg_is_in_recovery()' 2>/dev/null || :)" != f ]; then
    if leave_synchronous; then log "stopping: the primary no longer waits for this standby"
    else log "stopping: could not reach the primary to leave synchronous_standby_names"; fi
  fi
  if [ -n "$pg_pid" ]; then kill -INT "$pg_pid" 2>/dev/null || :; fi
}
trap on_stop INT TERM

if [ "$(id -u)" = 0 ]; then
  mkdir -p /var/run/postgresql
  chown postgres:postgres /var/run/postgresql
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then setup; fi
# exec: the background job is Postgres itself, so the signal on_stop sends reaches it.
(if [ "$(id -u)" = 0 ]; then exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"; else exec "$@"; fi) &
pg_pid=$!
become_synchronous &
sync_pid=$!
# wait returns early when a trapped signal arrives: keep waiting for Postgres itself.
status=0
while kill -0 "$pg_pid" 2>/dev/null; do
  wait "$pg_pid" && status=0 || status=$?
done
kill "$sync_pid" 2>/dev/null || :
exit "$status"
