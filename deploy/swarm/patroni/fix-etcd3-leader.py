#!/usr/bin/env python3
"""Backports Patroni's fix for a leader that steals the leader key back (patroni#2689, #2693; 3.0.3).

Debian 12's Patroni 3.0.2 renews the leader key with an unconditional put: a leader whose loop
stalled past the key's TTL (a DNS look-up of a lost node's etcd can take 10 s) gets a new lease and
writes its name over the key another member took meanwhile. Two primaries follow, and what the new
one acknowledged is rewound away. As upstream: the key is renewed only while it holds our name, or
created only while nobody holds it; otherwise the lock is lost and Patroni demotes.
Applied at image build; a Patroni that already has the fix is left as it is. The e2e test
test/e2e/patroni-leader-key.test.ts runs the scenario against etcd, fixed and (as a control) not.
"""
import py_compile
import sys

import patroni.dcs.etcd3 as etcd3

BUGGY = """                try:
                    self._run_and_handle_exceptions(self._client.put, self.leader_path,
                                                    self._name, self._lease, retry=_retry)
                except ReturnFalseException:
                    pass
        return bool(self._lease)
"""

FIXED = """                fields = {'key': base64_encode(self.leader_path), 'value': base64_encode(self._name),
                          'lease': self._lease}
                request_put = {'request_put': fields}
                # Still ours (our name): renew it under the new lease. Else only if nobody holds it.
                ours = {'key': fields['key'], 'target': 'VALUE', 'value': fields['value']}
                free = {'key': fields['key'], 'target': 'CREATE', 'create_revision': '0'}
                try:
                    return bool(self._run_and_handle_exceptions(self._client.txn, ours, request_put, retry=_retry)
                                or self._run_and_handle_exceptions(self._client.txn, free, request_put, retry=_retry))
                except ReturnFalseException:
                    return False
        return bool(self._lease)
"""



def main():
    path = etcd3.__file__
    source = open(path).read()
    if BUGGY not in source:
        if FIXED in source:
            print(f'{path}: has the leader key fix already')
            return
        if "'target': 'VALUE'" in source:
            print(f'{path}: has upstream\'s leader key fix (Patroni 3.0.3 or later)')
            return
        sys.exit(f'{path}: neither the known 3.0.2 code nor a fix; review deploy/swarm/patroni/fix-etcd3-leader.py')
    open(path, 'w').write(source.replace(BUGGY, FIXED))
    py_compile.compile(path, doraise=True)  # else the postgres user recompiles it on every start
    print(f'{path}: leader key renewed only while ours or free (patroni#2689)')


if __name__ == '__main__':
    main()
