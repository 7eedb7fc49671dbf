// /readyz answers from a short-lived cached result with at most one database check in flight: a
// flood of it (it is reachable through nginx) costs the database one query a second.
import { describe, expect, it } from 'vitest';
import type { Database } from '../../app/db/database';
import { createReadinessCheck } from '../../app/http/health';

function setup() {
  let now = 1_000_000;
  let calls = 0;
  let failing = false;
  let connected = true;
  let release: () => void = () => {};
  // Each check waits until the test releases it, so concurrent callers meet one check in flight.
  const db: Pick<Database, 'checkPrimary'> = {
    checkPrimary: () => {
      calls += 1;
      return new Promise<void>((resolve, reject) => {
        release = () => (failing ? reject(new Error('down')) : resolve());
      });
    },
  };
  const readiness = createReadinessCheck({ db, feed: { connected: () => connected }, clock: () => now });
  return {
    readiness,
    calls: () => calls,
    release: () => release(),
    advance: (ms: number) => (now += ms),
    fail: (yes: boolean) => (failing = yes),
    connect: (yes: boolean) => (connected = yes),
  };
}

describe('readiness', () => {
  it('runs one database check for 100 concurrent callers, and none more within a second', async () => {
    const s = setup();
    const answers = Array.from({ length: 100 }, () => s.readiness());
    await Promise.resolve();
    s.release();
    expect(new Set((await Promise.all(answers)).map((a) => JSON.stringify(a)))).toEqual(new Set([JSON.stringify({ ready: true, database: 'ok', revocations: 'ok' })]));
    s.advance(999);
    await Promise.all(Array.from({ length: 100 }, () => s.readiness()));
    expect(s.calls()).toBe(1);
    // A second later the result is old: one check again.
    s.advance(1);
    const again = s.readiness();
    await Promise.resolve();
    s.release();
    await again;
    expect(s.calls()).toBe(2);
  });

  it('reports the database and the revocation feed, each on its own', async () => {
    const s = setup();
    s.fail(true);
    const down = s.readiness();
    await Promise.resolve();
    s.release();
    expect(await down).toEqual({ ready: false, database: 'unavailable', revocations: 'ok' });
    // The feed is read on every call, not cached: a worker that lost it is unready at once.
    s.connect(false);
    expect(await s.readiness()).toEqual({ ready: false, database: 'unavailable', revocations: 'reconnecting' });
    s.fail(false);
    s.advance(1_000);
    const up = s.readiness();
    await Promise.resolve();
    s.release();
    expect(await up).toEqual({ ready: false, database: 'ok', revocations: 'reconnecting' });
    s.connect(true);
    expect(await s.readiness()).toEqual({ ready: true, database: 'ok', revocations: 'ok' });
  });
});
