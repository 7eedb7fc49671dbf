#!/usr/bin/env bash
# Entrypoint of a Patroni member (deploy/swarm/ha.yml): as root, gives the data volume to the
# postgres user and starts over as that user; then writes Patroni's configuration (configure.py:
# the environment, the Docker secrets, this container's address) and runs the command, Patroni.
set -Eeuo pipefail
data=/var/lib/postgresql/data

if [ "$(id -u)" = 0 ]; then
  # A name whose tasks are on a lost node can go unanswered by Docker's DNS: give up on a look-up in
  # 2 s, not glibc's 2 x 5 s, or Patroni's loop (which looks up every etcd member) outlives the
  # leader key's TTL and the leader loses its key to a stall.
  if ! grep -q '^options.*timeout:' /etc/resolv.conf 2>/dev/null; then
    echo 'options timeout:1 attempts:2' >> /etc/resolv.conf || echo "kas-patroni: /etc/resolv.conf is read-only; look-ups keep glibc's timeouts" >&2
  fi
  mkdir -p "$data" /var/run/postgresql
  chown postgres:postgres "$data" /var/run/postgresql /etc/patroni
  chmod 0700 "$data"
  HOME=$(getent passwd postgres | cut -d: -f6)
  export HOME
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

# One member per data volume. When a node comes back from a partition, Swarm has already given its
# tasks up and starts new ones there while the old ones are still stopping (stop_grace_period): the
# new member would otherwise run a second Postgres on the old one's files (another container's
# postmaster.pid looks stale from here). The lock is held for this container's life (Patroni keeps
# the descriptor; its Postgres does not inherit it) and the kernel drops it when the container ends.
exec 9>>"$data/.kas-member.lock"
if ! flock -n 9; then
  echo "kas-patroni: the member before this one still uses $data; waiting for it to stop" >&2
  flock 9
  echo "kas-patroni: $data is free" >&2
fi

# The configuration holds the passwords: readable by this user only.
umask 077
python3 /usr/local/lib/kas-patroni/configure.py "$PATRONICTL_CONFIG_FILE"
exec "$@"
