// Which images tests start: the official ones, unless the environment names others or
// deploy/airgap/build.sh has written its stand-ins (machines with no registry).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

export const ROOT = path.resolve(__dirname, '../..');
const AIRGAP_ENV = path.join(ROOT, 'deploy/airgap/images.env');

export interface Images {
  NODE_IMAGE: string;
  POSTGRES_IMAGE: string;
  NGINX_IMAGE: string;
  PROMETHEUS_IMAGE: string;
  /** The swarm's database high availability (deploy/swarm/ha.yml). */
  ETCD_IMAGE: string;
  HAPROXY_IMAGE: string;
}

const OFFICIAL: Images = {
  NODE_IMAGE: 'node:24-bookworm-slim',
  POSTGRES_IMAGE: 'postgres:15-bookworm',
  NGINX_IMAGE: 'nginx:stable-bookworm',
  PROMETHEUS_IMAGE: 'prom/prometheus:v2.53.4',
  ETCD_IMAGE: 'gcr.io/etcd-development/etcd:v3.5.17',
  HAPROXY_IMAGE: 'haproxy:2.8-bookworm',
};

function readEnvFile(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^\s*([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!.trim().replace(/^(['"])(.*)\1$/, '$2');
  }
  return out;
}

export function images(): Images {
  const airgap = existsSync(AIRGAP_ENV) ? readEnvFile(AIRGAP_ENV) : {};
  if (existsSync(AIRGAP_ENV)) {
    // Stand-in images mean no registry, so testcontainers' Ryuk (pulled from Docker Hub) cannot
    // start; the tests stop what they start.
    process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';
  }
  const pick = (name: keyof Images) => process.env[name] || airgap[name] || OFFICIAL[name];
  return {
    NODE_IMAGE: pick('NODE_IMAGE'),
    POSTGRES_IMAGE: pick('POSTGRES_IMAGE'),
    NGINX_IMAGE: pick('NGINX_IMAGE'),
    PROMETHEUS_IMAGE: pick('PROMETHEUS_IMAGE'),
    ETCD_IMAGE: pick('ETCD_IMAGE'),
    HAPROXY_IMAGE: pick('HAPROXY_IMAGE'),
  };
}
