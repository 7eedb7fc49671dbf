// The container's scrape across workers: each "worker" here is a WorkerMetrics with its own private
// socket (as in a PM2 worker), and the collector reads them all, as the metrics process does.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { API_REVOCATION_REASONS, CLIENT_GRANT_OUTCOMES, LOGIN_OUTCOMES, REFRESH_OUTCOMES } from '../../app/auth/outcomes';
import { routeLabel } from '../../app/http/metrics';
import { createCollector } from '../../app/metrics/collector';
import { createDeliveryMetrics } from '../../app/metrics/delivery';
import { serveReport, workerReport, type ReportEndpoint } from '../../app/metrics/report';
import { createWorkerMetrics, type WorkerMetrics } from '../../app/metrics/worker';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'metrics-test-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const pool = { size: 3, available: 1, using: 2, waiting: 0, maxSize: 10 };

function worker(id: string, pid: number, feedUp = true): WorkerMetrics {
  return createWorkerMetrics({ worker: id, pid }, { pool: () => pool, feed: { connected: () => feedUp, lastContact: () => 1_000 }, clock: () => 6_000 });
}

/** A sample's value from the text format: `name{labels} value`, labels in any order. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v) && Object.keys(have).length === Object.keys(labels).length) return Number(m[3]);
  }
  return undefined;
}

describe('the container scrape', () => {
  it('sums counters, merges histograms and keeps each worker\'s own series apart', async () => {
    const a = worker('0', 101);
    const b = worker('1', 102, false);
    const endpoints = [await serveReport(dir, { worker: '0', pid: 101 }, a), await serveReport(dir, { worker: '1', pid: 102 }, b)];
    try {
      for (let i = 0; i < 7; i++) a.request('GET', '/api/me/', 200, 0.003);
      for (let i = 0; i < 5; i++) b.request('GET', '/api/me/', 200, 0.2);
      b.request('GET', '/api/me/', 401, 0.001);
      a.login('failure');
      b.login('failure');
      b.refresh('reused');
      b.revocation('reuse');
      const text = await createCollector({ dir }).scrape();

      expect(sample(text, 'http_requests_total', { method: 'GET', route: '/api/me/', status: '200' })).toBe(12);
      expect(sample(text, 'http_requests_total', { method: 'GET', route: '/api/me/', status: '401' })).toBe(1);
      const bucket = (le: string) => sample(text, 'http_request_duration_seconds_bucket', { method: 'GET', route: '/api/me/', le });
      expect(bucket('0.005')).toBe(8); // 7 of a, b's 401
      expect(bucket('0.25')).toBe(13);
      expect(sample(text, 'http_request_duration_seconds_count', { method: 'GET', route: '/api/me/' })).toBe(13);
      expect(sample(text, 'http_request_duration_seconds_sum', { method: 'GET', route: '/api/me/' })).toBeCloseTo(7 * 0.003 + 5 * 0.2 + 0.001);
      expect(sample(text, 'auth_logins_total', { outcome: 'failure' })).toBe(2);
      expect(sample(text, 'auth_logins_total', { outcome: 'success' })).toBe(0);
      expect(sample(text, 'auth_refreshes_total', { outcome: 'reused' })).toBe(1);
      expect(sample(text, 'auth_revocations_total', { reason: 'reuse' })).toBe(1);
      expect(sample(text, 'db_pool_connections_in_use')).toBe(4);
      expect(sample(text, 'db_pool_connections_idle')).toBe(2);
      expect(sample(text, 'db_pool_waiting_requests')).toBe(0);
      // Per worker: the feed, the worker's share of requests, Node's own metrics (none dropped).
      expect(sample(text, 'auth_revocation_feed_up', { worker: '0', pid: '101' })).toBe(1);
      expect(sample(text, 'auth_revocation_feed_up', { worker: '1', pid: '102' })).toBe(0);
      expect(sample(text, 'auth_revocation_feed_last_contact_age_seconds', { worker: '1', pid: '102' })).toBe(5);
      expect(sample(text, 'http_worker_requests_total', { worker: '0', pid: '101' })).toBe(7);
      expect(sample(text, 'http_worker_requests_total', { worker: '1', pid: '102' })).toBe(6);
      expect(sample(text, 'process_resident_memory_bytes', { worker: '1', pid: '102' })).toBeGreaterThan(0);
      expect(sample(text, 'process_start_time_seconds', { worker: '0', pid: '101' })).toBeGreaterThan(0);
      expect(sample(text, 'metrics_collector_workers')).toBe(2);
      // One series per name and label set: Prometheus refuses a scrape with duplicates.
      const series = text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.slice(0, l.lastIndexOf(' ')));
      expect(new Set(series).size).toBe(series.length);
    } finally {
      for (const e of endpoints) await e.close();
    }
  });

  it('keeps the counts of a worker that stopped, and of one that crashed, so counters never go back', async () => {
    const collector = createCollector({ dir });
    const stays = worker('0', 201);
    const stops = worker('1', 202);
    const crashes = worker('2', 203);
    const staying = await serveReport(dir, { worker: '0', pid: 201 }, stays);
    const stopping = await serveReport(dir, { worker: '1', pid: 202 }, stops);
    // A crashed worker leaves its socket file behind and answers nothing more.
    const crashSocket = path.join(dir, '2-203.sock');
    const crashing = http.createServer((_req, res) => {
      workerReport({ worker: '2', pid: 203 }, crashes).then((r) => res.end(JSON.stringify(r)));
    });
    await new Promise<void>((resolve) => crashing.listen(crashSocket, resolve));
    const count = (text: string) => sample(text, 'auth_logins_total', { outcome: 'success' });
    try {
      stays.login('success');
      stops.login('success');
      crashes.login('success');
      expect(count(await collector.scrape())).toBe(3);

      stops.login('success'); // after the last scrape: only its final counts have it
      await stopping.close();
      crashes.login('success'); // lost with the crash (never read)
      await new Promise<void>((resolve) => crashing.close(() => resolve()));
      crashing.closeAllConnections();
      await new Promise<void>((resolve) => http.createServer().listen(crashSocket, function (this: http.Server) {
        this.close(() => resolve()); // a socket file nobody listens on any more
      }));
      expect(readdirSync(dir).sort()).toContain('1-202.final.json');

      let text = await collector.scrape();
      expect(count(text)).toBe(4); // 1 live + 2 final + 1 last read of the crashed one
      expect(sample(text, 'metrics_collector_workers')).toBe(1);
      expect(sample(text, 'http_worker_requests_total', { worker: '1', pid: '202' })).toBeUndefined();
      expect(readdirSync(dir)).toEqual(['0-201.sock']); // final taken once, dead socket removed

      stays.login('success');
      text = await collector.scrape();
      expect(count(text)).toBe(5);
    } finally {
      await staying.close();
    }
  });

  it('a worker that stops while scrapes run is counted once', async () => {
    const collector = createCollector({ dir });
    const w = worker('0', 301);
    const endpoint: ReportEndpoint = await serveReport(dir, { worker: '0', pid: 301 }, w);
    for (let i = 0; i < 10; i++) w.login('failure');
    const scrapes = Array.from({ length: 20 }, () => collector.scrape());
    await endpoint.close();
    const texts = await Promise.all([...scrapes, collector.scrape(), collector.scrape()]);
    for (const t of texts) expect(sample(t, 'auth_logins_total', { outcome: 'failure' })).toBe(10);
  });
});

describe('route labels', () => {
  it('are templates, with the API\'s trailing slash; unmatched paths share one label', () => {
    expect(routeLabel('/api/me')).toBe('/api/me/');
    expect(routeLabel('/api/token/refresh')).toBe('/api/token/refresh/');
    expect(routeLabel('/healthz')).toBe('/healthz');
    expect(routeLabel('/.well-known/jwks.json')).toBe('/.well-known/jwks.json');
    expect(routeLabel(undefined)).toBe('unmatched');
  });
});

describe('the webhook delivery process in the container scrape', () => {
  it('adds its delivery outcomes to the workers\' series, and the outbox backlog read once per scrape', async () => {
    let reads = 0;
    const delivery = createDeliveryMetrics({ worker: 'webhooks', pid: 201 }, {
      stats: async () => {
        reads += 1;
        return { pending: 7, failed: 1, oldestPendingSeconds: 42.5 };
      },
    });
    delivery.delivery('delivered');
    delivery.delivery('delivered');
    delivery.delivery('retried');
    const endpoints = [await serveReport(dir, { worker: '0', pid: 101 }, worker('0', 101)), await serveReport(dir, { worker: 'webhooks', pid: 201 }, delivery)];
    const text = await createCollector({ dir }).scrape();
    expect(sample(text, 'webhook_deliveries_total', { outcome: 'delivered' })).toBe(2);
    expect(sample(text, 'webhook_deliveries_total', { outcome: 'retried' })).toBe(1);
    expect(sample(text, 'webhook_deliveries_total', { outcome: 'failed' })).toBe(0);
    expect(sample(text, 'webhook_outbox_pending')).toBe(7);
    expect(sample(text, 'webhook_outbox_failed')).toBe(1);
    expect(sample(text, 'webhook_outbox_oldest_pending_seconds')).toBe(42.5);
    expect(sample(text, 'process_resident_memory_bytes', { worker: 'webhooks', pid: '201' })).toBeGreaterThan(0);
    expect(reads).toBe(1);
    for (const e of endpoints) await e.close();
  });
});

describe('the zero series', () => {
  it('start every outcome and reason the auth layer declares at 0, so rate() has a start', async () => {
    const text = await worker('0', 1).shared.metrics();
    const seeded: [string, string, readonly string[]][] = [
      ['auth_logins_total', 'outcome', LOGIN_OUTCOMES],
      ['auth_refreshes_total', 'outcome', REFRESH_OUTCOMES],
      ['auth_client_grants_total', 'outcome', CLIENT_GRANT_OUTCOMES],
      ['auth_revocations_total', 'reason', API_REVOCATION_REASONS],
    ];
    for (const [name, label, values] of seeded) {
      for (const value of values) expect(sample(text, name, { [label]: value }), `${name}{${label}="${value}"}`).toBe(0);
    }
    expect(REFRESH_OUTCOMES).toContain('refreshed');
    expect(REFRESH_OUTCOMES).toContain('reissued');
    expect(sample(text, 'auth_refreshes_total', { outcome: 'no_such_outcome' })).toBeUndefined(); // the check can fail
  });
});
