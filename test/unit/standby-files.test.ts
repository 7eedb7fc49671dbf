// The standby as the compose profile and the swarm overlay (deploy/swarm/standby.yml) run it: the
// same deploy/postgres/ files, at the paths the commands name, with the secrets and configs declared.
// (test/integration/database-unavailable.test.ts runs those files; test/e2e/failover.test.ts runs the
// compose profile.)
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ROOT } from '../support/images';

interface Service {
  command?: string[];
  entrypoint?: string[];
  profiles?: string[];
  init?: boolean;
  volumes?: string[];
  secrets?: string[];
  configs?: { source: string; target: string }[];
  environment?: Record<string, string>;
  networks?: { default?: { aliases?: string[] } };
  deploy?: { replicas?: unknown };
}
interface File {
  services: Record<string, Service>;
  configs?: Record<string, { file: string }>;
  secrets?: Record<string, unknown>;
}
const load = (file: string) => parse(readFileSync(path.join(ROOT, file), 'utf8')) as File;
const compose = load('docker-compose.yml');
const stack = load('deploy/swarm/stack.yml');
const overlay = load('deploy/swarm/standby.yml');
const MOUNT = '/etc/koa-auth-stack/postgres';
const HBA = `hba_file=${MOUNT}/pg_hba.conf`;

describe('the compose standby profile', () => {
  it('runs standby.sh from deploy/postgres/ on the official or stand-in image, with the same hba_file as the primary', () => {
    const primary = compose.services.postgres!;
    const standby = compose.services['postgres-standby']!;
    expect(standby.profiles).toEqual(['standby']);
    expect(primary.command).toEqual(['postgres', '-c', HBA]);
    expect(standby.command).toEqual(primary.command);
    expect(standby.entrypoint).toEqual(['bash', `${MOUNT}/standby.sh`]);
    for (const s of [primary, standby]) {
      expect(s.volumes).toContain(`./deploy/postgres:${MOUNT}:ro`);
      expect(s.init).toBe(true); // Postgres must not be PID 1 (docker-compose.yml says why)
    }
    expect(standby.environment).toMatchObject({ REPLICATION_PASSWORD: expect.any(String), POSTGRES_PASSWORD: expect.any(String) });
    for (const f of ['pg_hba.conf', 'standby.sh']) expect(existsSync(path.join(ROOT, 'deploy/postgres', f))).toBe(true);
    // The replication role standby.sh creates is the one pg_hba.conf lets stream.
    expect(readFileSync(path.join(ROOT, 'deploy/postgres/pg_hba.conf'), 'utf8')).toMatch(/^host\s+replication\s+replicator\s+all\s+scram-sha-256$/m);
    expect(readFileSync(path.join(ROOT, 'deploy/postgres/standby.sh'), 'utf8')).toMatch(/^REPLICATION_USER=replicator$/m);
  });
});

describe('the swarm overlay', () => {
  it('gives the swarm primary and standby the compose profile\'s commands, files as configs, secrets declared', () => {
    expect(Object.keys(stack.services)).toContain('postgres');
    const primary = overlay.services.postgres!;
    const standby = overlay.services['postgres-standby']!;
    expect(primary.command).toEqual(compose.services.postgres!.command);
    expect(standby.command).toEqual(compose.services['postgres-standby']!.command);
    expect(standby.entrypoint).toEqual(compose.services['postgres-standby']!.entrypoint);
    for (const s of [primary, standby]) {
      for (const c of s.configs ?? []) {
        const file = overlay.configs?.[c.source]?.file;
        expect(file, c.source).toBeDefined();
        expect(existsSync(path.join(ROOT, 'deploy/swarm', file!))).toBe(true);
        expect(path.posix.dirname(c.target)).toBe(MOUNT);
        expect(path.basename(file!)).toBe(path.basename(c.target));
      }
    }
    expect(standby.configs!.map((c) => path.basename(c.target)).sort()).toEqual(['pg_hba.conf', 'standby.sh']);
    for (const secret of standby.secrets ?? []) expect({ ...stack.secrets, ...overlay.secrets }).toHaveProperty(secret);
    for (const [name, value] of Object.entries(standby.environment ?? {})) {
      if (name.endsWith('_FILE')) expect(standby.secrets).toContain(path.basename(value));
    }
    // The name moves by a deploy: the standby takes the alias `postgres`, the old primary stays at zero.
    expect(standby.networks?.default?.aliases).toEqual(['${POSTGRES_STANDBY_ALIAS:-postgres-standby}']);
    expect(primary.deploy?.replicas).toBe('${POSTGRES_REPLICAS:-1}');
  });
});
