// Patroni's leader key against a real etcd, in the Patroni image the swarm runs (deploy/swarm/patroni):
// a leader whose loop stalled past its lease (as a DNS look-up of a lost node's etcd did in the
// swarm drill) must not take the key back from the member that replaced it. Debian's Patroni 3.0.2
// did (patroni#2689): two primaries, and what the new one acknowledged rewound away. The image
// carries the backported fix (fix-etcd3-leader.py); the same scenario on the unpatched code is the
// control that shows the test would catch the bug.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { images, ROOT } from '../support/images';
import { buildPatroniImage, docker, PATRONI_IMAGE as IMAGE } from '../support/patroni-pair';
import { run } from '../support/stack';

const id = randomBytes(4).toString('hex');
const NETWORK = `kas-leader-key-${id}`;
const ETCD = `kas-leader-key-etcd-${id}`;
const SCRIPT = path.join(ROOT, 'test/support/patroni-leader-key.py');

/** The scenario (test/support/patroni-leader-key.py) in the Patroni image: its one line of JSON. */
async function scenario(...args: string[]): Promise<{ renewed?: boolean; holder?: string | null; upstream?: true }> {
  const out = await docker(['run', '--rm', '--network', NETWORK, '--entrypoint', 'python3', '-v', `${SCRIPT}:/scenario.py:ro`, IMAGE, '/scenario.py', `${ETCD}:2379`, ...args]);
  return JSON.parse(out.trim().split('\n').at(-1)!) as { renewed?: boolean; holder?: string | null; upstream?: true };
}

describe('Patroni leader key (etcd v3)', () => {
  beforeAll(async () => {
    const { ETCD_IMAGE } = images();
    await buildPatroniImage();
    await docker(['network', 'create', NETWORK]);
    await docker(['run', '-d', '--name', ETCD, '--network', NETWORK,
      '-e', 'ETCD_NAME=etcd', '-e', 'ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379', '-e', `ETCD_ADVERTISE_CLIENT_URLS=http://${ETCD}:2379`,
      '-e', 'ETCD_DATA_DIR=/tmp/etcd', '-e', 'ETCDCTL_API=3', ETCD_IMAGE]);
    // Until etcd answers: polled with a deadline (expect.poll belongs to tests, vi.waitFor to hooks).
    await vi.waitFor(
      async () => {
        const health = await run('docker', ['exec', ETCD, 'etcdctl', 'endpoint', 'health']);
        if (health.code !== 0) throw new Error(`etcd is not up yet: ${health.stderr.trim()}`);
      },
      { timeout: 60_000, interval: 250 },
    );
  }, 600_000);

  afterAll(async () => {
    await run('docker', ['rm', '-f', ETCD]);
    await run('docker', ['network', 'rm', NETWORK]);
  });

  it('a leader back from a stall longer than its lease does not take the key from its successor', async () => {
    expect(await scenario()).toEqual({ renewed: false, holder: 'new-leader' });
  }, 120_000);

  it('(control) Debian’s unpatched 3.0.2 code does: the scenario catches the bug', async () => {
    const control = await scenario('unpatched');
    // A newer Patroni (the official image's PGDG packages) has upstream's fix and no 3.0.2 code.
    if (control.upstream) return;
    expect(control).toEqual({ renewed: true, holder: 'old-leader' });
  }, 120_000);
});
