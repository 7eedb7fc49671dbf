"""A stalled Patroni leader wakes up after its lease ended and another member took the leader key.

Runs inside the Patroni image against a real etcd (test/e2e/patroni-leader-key.test.ts):
  python3 patroni-leader-key.py ETCD_HOST:PORT [unpatched]
"unpatched" runs Debian's 3.0.2 code (the fix reverted in memory): the control that shows the
scenario catches the bug. Prints one JSON line: whether the stalled leader's renewal succeeded, and
who holds the key afterwards.
"""
import importlib.util
import json
import sys
import uuid

import patroni.dcs.etcd3 as etcd3

FIX = '/usr/local/lib/kas-patroni/fix-etcd3-leader.py'


def unpatched_module():
    spec = importlib.util.spec_from_file_location('kas_fix', FIX)
    fix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fix)
    source = open(etcd3.__file__).read()
    if fix.FIXED not in source:
        # A Patroni with upstream's own fix (3.0.3 or later, PGDG's on the official image): no 3.0.2
        # code to go back to.
        print(json.dumps({'upstream': True}))
        sys.exit(0)
    module = type(sys)('patroni.dcs.etcd3_unpatched')
    module.__package__ = 'patroni.dcs'
    module.__file__ = etcd3.__file__
    exec(compile(source.replace(fix.FIXED, fix.BUGGY), etcd3.__file__, 'exec'), module.__dict__)
    return module


def main():
    host, unpatched = sys.argv[1], len(sys.argv) > 2 and sys.argv[2] == 'unpatched'
    module = unpatched_module() if unpatched else etcd3
    scope = f'leader-key-{uuid.uuid4().hex[:8]}'

    def member(name):
        return module.Etcd3({'scope': scope, 'name': name, 'namespace': '/service/', 'hosts': [host],
                             'ttl': 20, 'loop_wait': 5, 'retry_timeout': 5})

    old, new = member('old-leader'), member('new-leader')
    assert old.attempt_to_acquire_leader(), 'the first member could not take the free key'
    old.get_cluster()  # what the old leader knows when its loop stalls: itself, on its lease
    # The stall outlasts the lease: etcd drops the key with it, and the other member takes it.
    old._client.call_rpc('/lease/revoke', {'ID': old._lease})
    new.get_cluster()
    assert new.attempt_to_acquire_leader(), 'the second member could not take the freed key'
    # The old leader's loop resumes: it renews its (ended) lease and the key.
    renewed = old.update_leader(None)
    # Who holds the key, as etcd has it (not a member's cached view).
    kvs = new._client.call_rpc('/kv/range', {'key': module.base64_encode(new.leader_path)}).get('kvs', [])
    holder = module.base64_decode(kvs[0]['value']) if kvs else None
    print(json.dumps({'renewed': bool(renewed), 'holder': holder}))


if __name__ == '__main__':
    main()
