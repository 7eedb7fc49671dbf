// A preload that writes a process's memory to stderr after every full collection and every 3 s:
// RSS split into the node binary's and other files' pages, glibc's heap ([heap]), anonymous mappings
// (under 1 MiB: mostly V8's 256 KiB heap pages; larger ones apart), and V8's own view (docs/PERFORMANCE.md,
// "PM2's agent in every process, and V8's compiler threads"). Plain JavaScript: a preload in
// TypeScript would load Node's type stripper into the process it measures.
//
//   npm run bench:guard-cpu -- --root ". --max-semi-space-size=4 -r ./scripts/bench/memory-log.js MALLOC_ARENA_MAX=1 MEMORY_LOG_TAG=base"
//
// Lines start with "MEMORY <tag>" (MEMORY_LOG_TAG), so several workers' lines can be told apart.
'use strict';
const { readFileSync } = require('node:fs');
const { constants, PerformanceObserver } = require('node:perf_hooks');
const { setInterval } = require('node:timers');
const v8 = require('node:v8');

const tag = process.env.MEMORY_LOG_TAG ?? String(process.pid);
const mb = (kb) => (kb / 1024).toFixed(1);

// kB of resident memory by kind of mapping, from /proc/self/smaps.
function mappings() {
  const kinds = { binary: 0, files: 0, heap: 0, anonSmall: 0, anonLarge: 0, other: 0 };
  let kind = 'other';
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const [, from, to, name] = head;
      const size = (parseInt(to, 16) - parseInt(from, 16)) / 1024;
      if (name === '[heap]') kind = 'heap';
      else if (name === '') kind = size < 1024 ? 'anonSmall' : 'anonLarge';
      else if (name === process.execPath) kind = 'binary';
      else if (name.startsWith('/')) kind = 'files';
      else kind = 'other';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) kinds[kind] += Number(rss[1]);
  }
  return kinds;
}

function log(when) {
  const m = mappings();
  const total = Object.values(m).reduce((a, b) => a + b, 0);
  const heap = v8.getHeapStatistics();
  const old = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space');
  const usage = process.memoryUsage();
  const parts = Object.entries(m).map(([k, kb]) => `${k}=${mb(kb)}`).join(' ');
  const v8part = `v8Total=${mb(heap.total_heap_size / 1024)} v8Used=${mb(heap.used_heap_size / 1024)} old=${mb((old?.space_used_size ?? 0) / 1024)}`;
  process.stderr.write(`MEMORY ${tag} ${when} rss=${mb(total)} ${parts} ${v8part} arrayBuffers=${mb(usage.arrayBuffers / 1024)}\n`);
}

new PerformanceObserver((list) => {
  // A gc entry's detail says which collection it was.
  for (const entry of list.getEntries()) if (entry.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) log('major');
}).observe({ entryTypes: ['gc'] });
setInterval(() => log('tick'), 3000).unref();
