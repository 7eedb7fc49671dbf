#!/usr/bin/env python3
"""Makes Patroni rewind an old leader that was stopped while it ran demoted (read-only).

Patroni decides whether a stopped member must be rewound before it follows the leader from
pg_controldata: for a member in recovery it takes "Minimum recovery ending location" and asks for a
rewind only when that is past the new timeline's fork. A leader cut off from etcd demotes itself: a
fast shutdown (its shutdown checkpoint is the first record the others never received, so the new
timeline forks exactly there) and a restart read-only. Until that standby's first restartpoint its
minimum recovery point is the checkpoint's *start*. Stopped uncleanly in that state (its node lost,
its task killed) the member comes back "in archive recovery" with a recovery point equal to the
fork: Patroni 3.0.2 (and upstream's code as of 2025) sees nothing to rewind, but Postgres replays
the checkpoint record on start and then refuses the new timeline ("new timeline 2 forked off current
database system timeline 1 before current recovery point"). The member runs as a replica that never
follows, for good.

The window: until the read-only member's first restartpoint attempt (checkpoint_timeout, 5 min by
default), which moves the minimum recovery point to the record's end, as a clean stop does.

The fix: a member in recovery is past the start of its latest checkpoint record, which replay reads
before anything else. The fork is a record boundary, so "checkpoint + 1" decides as the record's
exact end would, with no pg_waldump. Applied at image build; the e2e test
test/e2e/patroni-rejoin.test.ts runs the scenario with a real etcd and two members, fixed and (as a
control) not.
"""
import py_compile
import sys

import patroni.postgresql.rewind as rewind

BUGGY = """                logger.error('Exception when parsing lsn %s: %r', lsn, e)
                lsn = None

        return in_recovery, timeline, lsn
"""

FIXED = """                logger.error('Exception when parsing lsn %s: %r', lsn, e)
                lsn = None

        if in_recovery and lsn is not None:
            # kas (fix-rewind-check.py): replay reads the latest checkpoint record before anything
            # else; a standby started from a shutdown checkpoint keeps its minimum recovery point at
            # that record's start until its first restartpoint. The fork is a record boundary:
            # past the record's start decides as its end would.
            try:
                checkpoint = parse_lsn(data.get('Latest checkpoint location'))
                if checkpoint >= lsn and int(data.get("Latest checkpoint's TimeLineID")) == timeline:
                    lsn = checkpoint + 1
            except (AttributeError, IndexError, TypeError, ValueError):
                logger.exception('Failed to get the latest checkpoint from pg_controldata output')

        return in_recovery, timeline, lsn
"""


def main():
    path = rewind.__file__
    source = open(path).read()
    if FIXED in source:
        print(f'{path}: has the rewind check fix already')
        return
    if source.count(BUGGY) != 1:
        sys.exit(f'{path}: not the known 3.0.2 code; review deploy/swarm/patroni/fix-rewind-check.py')
    open(path, 'w').write(source.replace(BUGGY, FIXED))
    py_compile.compile(path, doraise=True)  # else the postgres user recompiles it on every start
    print(f'{path}: a member in recovery is past the start of its latest checkpoint record')


if __name__ == '__main__':
    main()
