// deploy/prometheus/: the scrape configurations and alert rules are valid for Prometheus, and every
// alert fires on the series that should raise it and stays quiet otherwise (rules.test.yml), by
// promtool (Debian's prometheus package; CI installs it: scripts/ci/prometheus.sh).
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const DIR = path.resolve(__dirname, '../../deploy/prometheus');

function promtool(args: string[], cwd = DIR): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    execFile('promtool', args, { cwd }, (err, stdout, stderr) => {
      if ((err as NodeJS.ErrnoException | null)?.code === 'ENOENT') {
        reject(new Error('promtool is missing: apt-get install prometheus (or bash scripts/ci/prometheus.sh)'));
      } else resolve({ code: err ? Number(err.code) || 1 : 0, out: stdout + stderr });
    });
  });
}

describe('deploy/prometheus', () => {
  it('the alert rules pass promtool check rules', async () => {
    const r = await promtool(['check', 'rules', 'rules.yml']);
    expect(r.out).toContain('SUCCESS: 10 rules found');
    expect(r.code).toBe(0);
  });

  it('the scrape configurations (compose and swarm) pass promtool check config', async () => {
    for (const file of ['prometheus.yml', 'prometheus-swarm.yml']) {
      const r = await promtool(['check', 'config', file]);
      expect(r.code, r.out).toBe(0);
    }
  });

  it('every alert fires on its input series and not before (promtool test rules)', async () => {
    const r = await promtool(['test', 'rules', 'rules.test.yml']);
    expect(r.out).toContain('SUCCESS');
    expect(r.code, r.out).toBe(0);
  });

  it('the rule tests catch a broken rule', async () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'rules-'));
    try {
      copyFileSync(path.join(DIR, 'rules.test.yml'), path.join(tmp, 'rules.test.yml'));
      const rules = readFileSync(path.join(DIR, 'rules.yml'), 'utf8');
      writeFileSync(path.join(tmp, 'rules.yml'), rules.replace('auth_revocation_feed_up == 0', 'auth_revocation_feed_up < 0'));
      const r = await promtool(['test', 'rules', 'rules.test.yml'], tmp);
      expect(r.code).not.toBe(0);
      expect(r.out).toContain('alertname: RevocationFeedDown');
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
