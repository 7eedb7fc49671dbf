// The container's one scrape. PM2, not our code, is the cluster's primary, so prom-client's cluster
// mode (AggregatorRegistry over the cluster module's IPC) cannot ask the workers. Instead every worker
// answers on a private Unix socket (report.ts), and this collector, a process of its own under PM2,
// reads them all at each scrape and merges them with prom-client's AggregatorRegistry.aggregate:
// counters summed, histograms merged bucket by bucket, each worker's own series kept apart by their
// `worker` and `pid` labels.
//
// Counts stay exact and never go back: a worker counts a request before answering it, so a scrape
// after N answers shows N; a worker that stops leaves its final counts (report.ts), and the collector
// keeps them in `retired`, as it keeps the counts last read from a worker that crashed. Scrapes run
// one at a time, so a worker's final counts are added once.
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { AggregatorRegistry, Registry } from 'prom-client';
import { FINAL_SUFFIX, SOCKET_SUFFIX, type MetricsJson, type WorkerReport } from './report';

export interface Collector {
  /** The whole container in the Prometheus text format. */
  scrape(): Promise<string>;
  contentType: string;
}

function readReport(socketPath: string, timeoutMs: number): Promise<WorkerReport> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: '/', timeout: timeoutMs, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`worker answered ${res.statusCode}`));
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString()) as WorkerReport);
        } catch (err) {
          reject(err as Error);
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
  });
}

const gone = (err: unknown) => ['ECONNREFUSED', 'ENOENT'].includes((err as NodeJS.ErrnoException).code ?? '');

/** What outlives a process: its counters and histograms (gauges describe a process that is no more). */
const lasting = (metrics: MetricsJson) => metrics.filter((m) => m.type === 'counter' || m.type === 'histogram');

const merge = (parts: MetricsJson[]) => AggregatorRegistry.aggregate(parts);

export function createCollector(options: { dir: string; timeoutMs?: number; onError?: (err: Error, worker: string) => void }): Collector {
  const { dir } = options;
  const timeoutMs = options.timeoutMs ?? 2_000;
  let retired: MetricsJson = [];
  const last = new Map<string, WorkerReport>(); // by file base name, the last report read
  let queue: Promise<unknown> = Promise.resolve();

  // Finals in the directory when the collector starts belong to an earlier run of the container (or
  // of the collector, whose sums are gone with it): not this run's.
  for (const name of list()) if (name.endsWith(FINAL_SUFFIX)) rmSync(path.join(dir, name), { force: true });

  function list(): string[] {
    try {
      return readdirSync(dir);
    } catch {
      return []; // no worker has started yet
    }
  }

  async function retire(base: string, shared: MetricsJson | undefined): Promise<void> {
    last.delete(base);
    if (shared) retired = (await merge([retired, lasting(shared)]).getMetricsAsJSON()) as unknown as MetricsJson;
  }

  /** The final counts a stopped worker left, added to `retired` once. */
  async function takeFinal(base: string): Promise<boolean> {
    const file = path.join(dir, base + FINAL_SUFFIX);
    let final: WorkerReport;
    try {
      final = JSON.parse(readFileSync(file, 'utf8')) as WorkerReport;
    } catch {
      return false;
    }
    await retire(base, final.shared);
    rmSync(file, { force: true });
    return true;
  }

  async function collect(): Promise<string> {
    const names = list();
    const bases = new Set(names.filter((n) => n.endsWith(SOCKET_SUFFIX)).map((n) => n.slice(0, -SOCKET_SUFFIX.length)));
    for (const n of names) if (n.endsWith(FINAL_SUFFIX)) bases.add(n.slice(0, -FINAL_SUFFIX.length));
    // A worker whose socket and final are both gone died with its files: keep what was last read.
    for (const base of [...last.keys()]) if (!bases.has(base)) await retire(base, last.get(base)?.shared);

    // Read every socket at once; then settle each worker in turn, so `retired` changes one at a time.
    const reads = await Promise.all(
      [...bases].map(async (base) => {
        if (existsSync(path.join(dir, base + FINAL_SUFFIX))) return { base };
        try {
          return { base, report: await readReport(path.join(dir, base + SOCKET_SUFFIX), timeoutMs) };
        } catch (err) {
          return { base, err: err as Error };
        }
      }),
    );
    const live: WorkerReport[] = [];
    const stale: MetricsJson[] = [];
    for (const { base, report, err } of reads) {
      if (report) {
        last.set(base, report);
        live.push(report);
      } else if (await takeFinal(base)) {
        // stopped: its final counts are in `retired` now (also when it stopped during the read)
      } else if (gone(err)) {
        await retire(base, last.get(base)?.shared); // crashed: keep what was last read
        rmSync(path.join(dir, base + SOCKET_SUFFIX), { force: true });
      } else {
        // Alive but slow: its last counts this time, so the sum does not dip.
        const seen = last.get(base);
        if (seen) stale.push(lasting(seen.shared));
        if (err) options.onError?.(err, base);
      }
    }

    const workers: MetricsJson = [
      {
        name: 'metrics_collector_workers',
        help: 'Workers whose metrics this scrape read (alive and answering).',
        type: 'gauge',
        values: [{ value: live.length, labels: {} }],
        aggregator: 'sum',
      },
    ];
    // Each worker's own series are unique by their labels; "first" keeps every one ("omit" would drop
    // process_start_time_seconds).
    const own = live.map((r) => r.own.map((m) => ({ ...m, aggregator: 'first' })));
    return merge([retired, ...stale, ...live.map((r) => r.shared), ...own, workers]).metrics();
  }

  return {
    contentType: Registry.PROMETHEUS_CONTENT_TYPE,
    scrape() {
      const next = queue.then(collect);
      queue = next.catch(() => undefined);
      return next;
    },
  };
}
