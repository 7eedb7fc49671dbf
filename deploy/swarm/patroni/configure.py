"""Writes a Patroni member's configuration (argv[1]) from the environment and the Docker secrets.

Read by Patroni and by patronictl (PATRONICTL_CONFIG_FILE), so `patronictl list` works inside a
member with no arguments. The settings under bootstrap.dcs apply once, when the cluster is made;
change them later with `patronictl edit-config`.

Environment (deploy/swarm/ha.yml sets it):
  PATRONI_NAME                  this member's name, unique in the cluster (the swarm node's id)
  PATRONI_SCOPE                 the cluster's name (kas)
  KAS_ETCD_HOSTS                etcd members, host:port, comma-separated
  KAS_SUPERUSER_PASSWORD_FILE   the postgres superuser's password (also pg_rewind's)
  KAS_REPLICATION_PASSWORD_FILE the replication user's password
  KAS_APP_PASSWORD_FILE         the app's password (post-bootstrap.sh makes its role)
  KAS_PATRONI_TTL, KAS_PATRONI_LOOP_WAIT, KAS_PATRONI_RETRY_TIMEOUT  leader-key timing (20, 5, 5 seconds)
"""
import os
import socket
import sys

import yaml


def env(name, default=None):
    value = os.environ.get(name, '')
    if value:
        return value
    if default is None:
        sys.exit(f'kas-patroni: {name} is required')
    return default


def secret(name):
    path = env(name)
    try:
        with open(path, encoding='utf-8') as f:
            # Trimmed, as the app trims the secrets it reads.
            value = f.read().strip()
    except OSError as err:
        sys.exit(f'kas-patroni: {name}: cannot read {path}: {err.strerror}')
    if not value:
        sys.exit(f'kas-patroni: {name}: {path} is empty')
    return value


def own_address():
    """This container's address on its network: what the other members, etcd and HAProxy reach."""
    given = os.environ.get('KAS_CONNECT_ADDRESS')
    if given:
        return given
    return socket.gethostbyname(socket.gethostname())


def main(path):
    address = own_address()
    ttl = int(env('KAS_PATRONI_TTL', '20'))
    loop_wait = int(env('KAS_PATRONI_LOOP_WAIT', '5'))
    retry_timeout = int(env('KAS_PATRONI_RETRY_TIMEOUT', '5'))
    if loop_wait + 2 * retry_timeout > ttl:
        sys.exit('kas-patroni: KAS_PATRONI_LOOP_WAIT + 2 * KAS_PATRONI_RETRY_TIMEOUT must not exceed KAS_PATRONI_TTL')
    pg_major = env('PG_MAJOR', '15')
    config = {
        'scope': env('PATRONI_SCOPE', 'kas'),
        'namespace': '/service/',
        'name': env('PATRONI_NAME'),
        'log': {'level': env('PATRONI_LOG_LEVEL', 'INFO')},
        'restapi': {
            'listen': '0.0.0.0:8008',
            'connect_address': f'{address}:8008',
            # Switchover, restart, reinitialise, configuration: from this container (patronictl)
            # and from the other members only. The health checks (GET) stay open to HAProxy.
            'allowlist': ['127.0.0.1'],
            'allowlist_include_members': True,
        },
        'etcd3': {'hosts': [h.strip() for h in env('KAS_ETCD_HOSTS').split(',') if h.strip()]},
        'bootstrap': {
            'dcs': {
                # The leader key lives ttl seconds unless renewed every loop_wait: a lost leader is
                # replaced within about ttl + loop_wait; an isolated one demotes itself within
                # loop_wait + retry_timeout, before any other member may take over.
                'ttl': ttl,
                'loop_wait': loop_wait,
                'retry_timeout': retry_timeout,
                'maximum_lag_on_failover': 1048576,
                # A commit is acknowledged once a synchronous standby has it, and only that standby
                # may be promoted: nothing acknowledged is lost with the leader.
                'synchronous_mode': True,
                'synchronous_node_count': 1,
                'postgresql': {
                    # An old leader rejoins as a replica: rewound to the new timeline, not rebuilt.
                    'use_pg_rewind': True,
                    'use_slots': True,
                    'parameters': {
                        'wal_level': 'replica',
                        'hot_standby': 'on',
                        'wal_log_hints': 'on',
                        'max_connections': 200,
                        'max_wal_senders': 10,
                        'max_replication_slots': 10,
                        'wal_keep_size': '256MB',
                        'password_encryption': 'scram-sha-256',
                    },
                },
            },
            'initdb': [{'encoding': 'UTF8'}, {'locale': 'C.UTF-8'}, 'data-checksums'],
            'post_bootstrap': '/usr/local/bin/kas-patroni-post-bootstrap',
        },
        'postgresql': {
            'listen': '0.0.0.0:5432',
            'connect_address': f'{address}:5432',
            'data_dir': '/var/lib/postgresql/data/pgdata',
            'bin_dir': f'/usr/lib/postgresql/{pg_major}/bin',
            'pgpass': '/tmp/pgpass',
            # If pg_rewind cannot bring the old leader back, it is rebuilt from the new one.
            'remove_data_directory_on_rewind_failure': True,
            'remove_data_directory_on_diverged_timelines': True,
            # A new member's copy starts at once, not after a spread checkpoint on the leader
            # (about 100 s here): the cluster has its synchronous standby back that much sooner.
            'basebackup': [{'checkpoint': 'fast'}],
            'authentication': {
                'superuser': {'username': 'postgres', 'password': secret('KAS_SUPERUSER_PASSWORD_FILE')},
                'replication': {'username': 'replicator', 'password': secret('KAS_REPLICATION_PASSWORD_FILE')},
            },
            'pg_hba': [
                'local all all trust',
                'host replication replicator 0.0.0.0/0 scram-sha-256',
                'host all all 0.0.0.0/0 scram-sha-256',
            ],
        },
        'tags': {'nofailover': False, 'noloadbalance': False, 'clonefrom': False, 'nosync': False},
    }
    secret('KAS_APP_PASSWORD_FILE')  # fail now, not at bootstrap, when it is missing
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(config, f, sort_keys=False)
    print(f'kas-patroni: {config["name"]} at {address}, cluster {config["scope"]}, etcd {",".join(config["etcd3"]["hosts"])}', file=sys.stderr)


if __name__ == '__main__':
    main(sys.argv[1])
