// A worker's side of the container's scrape: its metrics as JSON on a private Unix socket in a
// directory only this container sees, `<worker>-<pid>.sock`, for the collector (collector.ts) to read.
// The socket is the worker's own (`exclusive`), not one shared through PM2's cluster primary. When the
// worker stops, after its last request, it leaves its final counts beside the socket
// (`<worker>-<pid>.final.json`) and closes the socket: the collector adds them to what it keeps of
// workers that are gone, so the container's counters never go back when a worker is replaced.
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { WorkerIdentity, WorkerMetrics } from './worker';

/** A metric as Registry.getMetricsAsJSON() gives it at run time (its declared types say enum and a
 * function where the JSON has strings and nothing). */
export interface MetricJson {
  name: string;
  help: string;
  type: string;
  aggregator: string;
  values: { value: number; labels: Record<string, string | number>; metricName?: string }[];
}
export type MetricsJson = MetricJson[];

export interface WorkerReport extends WorkerIdentity {
  /** Summed over the workers. */
  shared: MetricsJson;
  /** This worker's own series, labelled with worker and pid. */
  own: MetricsJson;
}

export const SOCKET_SUFFIX = '.sock';
export const FINAL_SUFFIX = '.final.json';

/** What a process reports: a worker's metrics, or the webhook delivery process's (delivery.ts). */
export type Reported = Pick<WorkerMetrics, 'shared' | 'own'>;

export async function workerReport(identity: WorkerIdentity, metrics: Reported): Promise<WorkerReport> {
  const [shared, own] = await Promise.all([metrics.shared.getMetricsAsJSON(), metrics.own.getMetricsAsJSON()]);
  return { ...identity, shared: shared as unknown as MetricsJson, own: own as unknown as MetricsJson };
}

export interface ReportEndpoint {
  path: string;
  /** Call once no request can be answered any more: leaves the final counts, then closes. */
  close(): Promise<void>;
}

export async function serveReport(dir: string, identity: WorkerIdentity, metrics: Reported): Promise<ReportEndpoint> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const base = path.join(dir, `${identity.worker}-${identity.pid}`);
  const socket = base + SOCKET_SUFFIX;
  rmSync(socket, { force: true }); // left by an earlier process with this pid
  const server = http.createServer((_req, res) => {
    workerReport(identity, metrics).then(
      (report) => {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(report));
      },
      (err: unknown) => {
        res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end(String(err));
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path: socket, exclusive: true }, () => resolve());
  });
  return {
    path: socket,
    async close() {
      // Final counts first, then the socket: the collector never sees neither.
      const final = await workerReport(identity, metrics);
      writeFileSync(`${base}.tmp`, JSON.stringify(final));
      renameSync(`${base}.tmp`, base + FINAL_SUFFIX);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      rmSync(socket, { force: true });
    },
  };
}
