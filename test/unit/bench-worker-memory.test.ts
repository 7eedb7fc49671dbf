// The bench's reading of a worker's memory (scripts/bench/worker-memory.ts): grep's lines from each
// worker's /proc/PID/status, in MB of 10^6 bytes, one per worker or an error.
import { describe, expect, it } from 'vitest';
import { workerMemoryMb } from '../../scripts/bench/worker-memory';

describe("the bench's worker memory", () => {
  it('reads each worker in the order of its pids, KiB as MB', () => {
    const out = '/proc/45/status:VmRSS:\t  103004 kB\n/proc/20/status:VmRSS:\t  103280 kB\n';
    const mb = workerMemoryMb(out, [20, 45], 'VmRSS');
    expect(mb[0]).toBeCloseTo(105.758720, 6);
    expect(mb[1]).toBeCloseTo(105.476096, 6);
  });

  it('reads only the field asked for', () => {
    const out = '/proc/20/status:VmHWM:\t  126416 kB\n/proc/20/status:VmRSS:\t  107092 kB\n';
    expect(workerMemoryMb(out, [20], 'VmHWM')).toEqual([(126416 * 1024) / 1e6]);
    expect(workerMemoryMb(out, [20], 'VmRSS')).toEqual([(107092 * 1024) / 1e6]);
  });

  it('fails when a worker has no reading (it exited; a zombie has no VmRSS line)', () => {
    const out = '/proc/20/status:VmRSS:\t  103280 kB\n';
    expect(() => workerMemoryMb(out, [20, 45], 'VmRSS')).toThrow(/none for pid 45/);
    expect(() => workerMemoryMb('', [20], 'VmHWM')).toThrow(/none for pid 20 \(no output\)/);
  });
});
