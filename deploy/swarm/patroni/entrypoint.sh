#!/usr/bin/env bash
# Entrypoint of a Patroni member (deploy/swarm/ha.yml): as root, gives the data volume to the
# postgres user and starts over as that user; then writes Patroni's configuration (configure.py:
# the environment, the Docker secrets, this container's address) and runs the command, Patroni.
set -Eeuo pipefail
data=/var/lib/postgresql/data

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$data" /var/run/postgresql
  chown postgres:postgres "$data" /var/run/postgresql /etc/patroni
  chmod 0700 "$data"
  HOME=$(getent passwd postgres | cut -d: -f6)
  export HOME
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

# The configuration holds the passwords: readable by this user only.
umask 077
python3 /usr/local/lib/kas-patroni/configure.py "$PATRONICTL_CONFIG_FILE"
exec "$@"
