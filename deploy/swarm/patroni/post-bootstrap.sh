#!/usr/bin/env bash
# Patroni's post_bootstrap: run once, on the member that initialised the cluster, with a superuser
# connection string as its argument. Makes the app's role (its password from the app's secret,
# the one the app reads) and its database, as the postgres image does for POSTGRES_USER/DB.
set -Eeuo pipefail
password=$(<"$KAS_APP_PASSWORD_FILE")
# Trimmed as the app trims it (app/config.ts reads DATABASE_PASSWORD_FILE the same way).
password=$(printf '%s' "$password" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
psql "$1" -v ON_ERROR_STOP=1 --no-psqlrc -q \
  -v user="${POSTGRES_USER:-app}" -v db="${POSTGRES_DB:-app}" -v password="$password" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"user";
SQL
echo "kas-patroni: created role ${POSTGRES_USER:-app} and database ${POSTGRES_DB:-app}" >&2
