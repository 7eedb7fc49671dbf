// An old leader that was stopped while it ran demoted must rejoin the new leader by itself.
//
// The swarm drill's old leader is cut off, demotes itself (its shutdown checkpoint is the first WAL
// record the standby never got, so the new timeline forks exactly there) and runs read-only until
// Swarm kills its task. Debian's Patroni 3.0.2 then judged the member from a minimum recovery
// point equal to the fork, saw nothing to rewind, and left it a replica that never follows ("new
// timeline 2 forked off current database system timeline 1 before current recovery point"). The
// image carries a fix (deploy/swarm/patroni/fix-rewind-check.py). Here the scenario runs on two
// members and a real etcd, with the fix and (as the control that shows the test catches the bug)
// without it.
import path from 'node:path';
import { afterAll, beforeAll, describe, it, type ExpectStatic } from 'vitest';
import { ROOT } from '../support/images';
import { buildPatroniImage, docker, lsn, PatroniPair, type MemberOptions } from '../support/patroni-pair';

const UNPATCH = path.join(ROOT, 'test/support/patroni-rewind-unpatched.py');
const FORKED_OFF = 'new timeline 2 forked off current database system timeline 1 before current recovery point';

/**
 * Up to the replaced old leader's start: `a` leads with `b` as its synchronous standby; `a` is cut
 * off while nothing is written, demotes itself, and is killed while it runs demoted; `b` leads on
 * timeline 2. Checks the data directory `a` comes back with is the case under test, and starts `a`
 * again on it. (The tests run concurrently: each passes its own `expect`.)
 */
async function demotedLeaderKilled(expect: ExpectStatic, pair: PatroniPair, restart: MemberOptions): Promise<void> {
  const began = Date.now();
  const phase = (what: string) => console.log(`[${pair.network} ${((Date.now() - began) / 1000).toFixed(1)} s] ${what}`);
  await pair.startEtcd();
  await pair.startMember('a');
  await expect.poll(() => pair.sql('a', 'SELECT NOT pg_is_in_recovery()'), { timeout: 120_000, interval: 1000 }).toBe('t');
  phase('a leads');
  await pair.startMember('b');
  await expect.poll(() => pair.streams('a', 'b'), { timeout: 120_000, interval: 1000 }).toBe(true);
  await expect.poll(() => pair.sql('a', "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'b'"), { timeout: 60_000, interval: 1000 }).toBe('sync');

  // Nothing written from here to the cut and after it: no autovacuum, every page frozen with its
  // hint bits set (else a read writes a full-page image), a checkpoint now so no timed one
  // comes; then wait until the standby has everything and nothing new came for 30 s. The bgwriter
  // logs a standby snapshot within 15 s (+ 10 s of hibernation) of the last important record,
  // and nothing after it: the next record `a` writes is its shutdown checkpoint.
  phase('b is its synchronous standby');
  await pair.must('a', 'ALTER SYSTEM SET autovacuum = off');
  // A cut-off primary's shutdown waits for its walsender to give up (60 s by default).
  await pair.must('a', "ALTER SYSTEM SET wal_sender_timeout = '5s'");
  await pair.must('a', 'SELECT pg_reload_conf()');
  for (const database of ['postgres', 'app', 'template1']) await pair.must('a', 'VACUUM (FREEZE, ANALYZE)', database);
  await pair.must('a', 'CHECKPOINT');
  let last = '';
  let since = Date.now();
  await expect.poll(async () => {
    const insert = await pair.sql('a', 'SELECT pg_current_wal_flush_lsn()');
    const received = await pair.sql('b', 'SELECT pg_last_wal_receive_lsn()');
    if (insert === null || insert !== received || insert !== last) {
      last = insert ?? '';
      since = Date.now();
    }
    return Date.now() - since;
  }, { timeout: 150_000, interval: 1000 }).toBeGreaterThan(40_000);

  phase('quiet; a cut off');
  await docker(['network', 'disconnect', pair.network, pair.container('a')]);
  // `b` takes over on timeline 2; `a`, without etcd, demotes itself and runs read-only.
  await expect.poll(() => pair.sql('b', 'SELECT NOT pg_is_in_recovery() AND timeline_id = 2 FROM pg_control_checkpoint()'), { timeout: 120_000, interval: 1000 }).toBe('t');
  phase('b leads on timeline 2');
  await expect.poll(() => pair.sql('a', 'SELECT pg_is_in_recovery()'), { timeout: 120_000, interval: 1000 }).toBe('t');
  phase('a demoted; killed');
  await docker(['kill', '-s', 'KILL', pair.container('a')]);
  await docker(['rm', pair.container('a')]);

  // The case: stopped in recovery, its minimum recovery point is its shutdown checkpoint's
  // start, and that is where timeline 2 forked.
  const history = await docker(['exec', pair.container('b'), 'cat', '/var/lib/postgresql/data/pgdata/pg_wal/00000002.history']);
  const fork = history.trim().split('\n').at(-1)!.split('\t');
  const control = await pair.controldata('a');
  expect(control['Database cluster state']).toBe('in archive recovery');
  expect(fork[0]).toBe('1');
  const written = async () => `what \`a\` wrote after the fork:\n${await pair.waldump('a', '1', fork[1] ?? '')}`;
  if (lsn(control['Latest checkpoint location']) !== lsn(fork[1])) expect.fail(`a wrote more than its shutdown checkpoint after the cut; ${await written()}`);
  expect(lsn(control['Minimum recovery ending location'])).toBe(lsn(fork[1]));

  await pair.startMember('a', restart);
  phase('a started again');
}

/** The members' last log lines, for a failure. */
async function showLogs(pair: PatroniPair): Promise<void> {
  for (const member of ['a', 'b']) {
    console.log(`--- ${pair.container(member)} ---\n${(await pair.logs(member)).split('\n').slice(-60).join('\n')}`);
  }
}

describe('an old leader stopped while demoted rejoins (Patroni rewind check)', () => {
  const fixed = new PatroniPair('rejoin');
  const control = new PatroniPair('rejoin-ctl');

  beforeAll(async () => {
    await buildPatroniImage();
  }, 600_000);

  afterAll(async () => {
    await Promise.all([fixed.remove(), control.remove()]);
  }, 120_000);

  it.concurrent('is rewound to the new timeline and follows the new leader', async ({ expect, onTestFailed }) => {
    onTestFailed(() => showLogs(fixed));
    await demotedLeaderKilled(expect, fixed, {});
    await expect.poll(() => fixed.streams('b', 'a'), { timeout: 120_000, interval: 1000 }).toBe(true);
    expect(await fixed.logs('a')).toContain('running pg_rewind from b');
    expect(await fixed.sql('a', 'SELECT received_tli FROM pg_stat_wal_receiver')).toBe('2');
    // What the new leader writes reaches it.
    await fixed.must('b', 'CREATE TABLE after_rejoin (n int); INSERT INTO after_rejoin VALUES (42)');
    await expect.poll(() => fixed.sql('a', 'SELECT n FROM after_rejoin'), { timeout: 60_000, interval: 500 }).toBe('42');
  }, 900_000);

  it.concurrent('(control) Debian’s unpatched 3.0.2 check leaves it on its old timeline: the scenario catches the bug', async ({ expect, onTestFailed }) => {
    onTestFailed(() => showLogs(control));
    await demotedLeaderKilled(expect, control, { before: 'python3 /kas-test/patroni-rewind-unpatched.py', mount: UNPATCH });
    await expect.poll(async () => (await control.logs('a')).includes(FORKED_OFF), { timeout: 120_000, interval: 1000 }).toBe(true);
    const logs = await control.logs('a');
    expect(logs).toContain('reverted to the 3.0.2 rewind check');
    expect(logs).not.toContain('running pg_rewind');
    // It streams timeline 1 up to the fork, again and again, and never receives timeline 2.
    expect(await control.sql('a', 'SELECT coalesce(max(received_tli), 0) < 2 FROM pg_stat_wal_receiver')).toBe('t');
  }, 900_000);
});
