// A worker's memory as the bench reads it: one field of /proc/PID/status for each PM2 worker, from
// `grep -H FIELD /proc/PID/status …` run in the app's container. /proc counts KiB; the targets count
// MB of 10^6 bytes ("worker RSS ≤ 120 MB").

export type StatusField = 'VmRSS' | 'VmHWM';

/**
 * Each worker's `field` in MB, in the order of `pids`. Throws unless every worker has one: a worker
 * that has exited by then (a zombie has no VmRSS line) must fail the reading (a scenario's peak, or
 * the workers at rest), not shrink it.
 */
export function workerMemoryMb(grepOutput: string, pids: number[], field: StatusField): number[] {
  const kib = new Map<number, number>();
  for (const m of grepOutput.matchAll(new RegExp(String.raw`^/proc/(\d+)/status:${field}:\s+(\d+) kB$`, 'gm'))) kib.set(Number(m[1]), Number(m[2]));
  const missing = pids.filter((p) => !kib.has(p));
  if (missing.length) throw new Error(`worker ${field}: none for pid ${missing.join(', ')} (${grepOutput.trim() || 'no output'})`);
  return pids.map((p) => (kib.get(p)! * 1024) / 1e6);
}
