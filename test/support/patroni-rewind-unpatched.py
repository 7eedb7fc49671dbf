"""Puts Debian's Patroni 3.0.2 rewind check back in a member (run as root before its entrypoint).

The control of test/e2e/patroni-rejoin.test.ts: the image's fix (deploy/swarm/patroni/
fix-rewind-check.py) reverted, so the test shows the scenario catches the bug it fixes.
"""
import importlib.util
import sys

import patroni.postgresql.rewind as rewind

spec = importlib.util.spec_from_file_location('kas_fix', '/usr/local/lib/kas-patroni/fix-rewind-check.py')
fix = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fix)
source = open(rewind.__file__).read()
if fix.FIXED not in source:
    sys.exit(f'{rewind.__file__}: the image has no rewind check fix to revert')
open(rewind.__file__, 'w').write(source.replace(fix.FIXED, fix.BUGGY))
print('kas-test: reverted to the 3.0.2 rewind check', file=sys.stderr)
