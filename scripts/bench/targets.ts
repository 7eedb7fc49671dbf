// Issue 19's targets, read from one `npm run bench` report, and a run set beside an earlier one
// ("a regression of more than 10% in any is a finding"). Plain functions over the report bench.ts
// writes with --json, so an old report file can be compared without running anything.
import type { CpuBudget } from './cpu-budget';

export interface Load {
  rps: number;
  p50: number; // ms
  p99: number;
  non2xx: number;
  errors: number;
  requests: number;
  /** Where the machine's CPU went during the timed run (not the warm-up). */
  cpu?: CpuBudget;
}

export type Via = 'nginx' | 'direct';

export interface Row {
  name: string;
  via: Via;
  conns: number;
  load: Load;
  /** Median of the per-round ratios to the host ceiling (or, unpaired, to the run's median ceiling). */
  ceilingRatio?: number;
  /**
   * The scenario's own limit: the hash-bound rate for logins, pgbench for refreshes. inRun, for
   * logins: the share of the CPUs' time that went to hashing during the runs, and a hash's CPU there
   * (the same ratio with the hash as the logins paid it, not timed alone before them).
   */
  reference?: { ratio: number; what: string; inRun?: { share: number; hashMs: number } };
  /** The largest RSS of any worker during the scenario's runs. */
  rssMb?: number | undefined;
}

/** What `npm run bench -- --json FILE` writes. */
export interface BenchReport {
  rows: Row[];
  ceiling: Load;
  pgbenchTps: number | undefined;
  imageSize: number;
  failed: string[];
  /** Each worker's RSS once the stack was up, before the load (reports from before 2026-12-07 have none). */
  restRssMb?: number[];
  /** When and how it ran (reports from before 2026-12-06 have neither). */
  date?: string;
  command?: string;
}

/** The scenarios' names in a report: bench.ts names its rows with these. */
export const ME = 'GET /api/me/';
export const VERIFY = 'POST /api/token/verify/';
export const LOGIN = 'POST /api/token/ (login)';
export const REFRESH = 'POST /api/token/refresh/';

export interface Reading {
  /** The same in every report (the target's label names this run's ceiling). */
  key: string;
  target: string;
  /** The number the target is judged by; undefined when its scenario did not run. */
  value: number | undefined;
  /** How the value reads in a table. */
  shown: string | undefined;
  /** Whether a larger value is better (req/s ratios) or worse (memory, CPU). */
  higherIsBetter: boolean;
  /** Met, not met, or no bar of its own (undefined: compared with a baseline only). */
  met: boolean | undefined;
}

const ERRORS = 'zero errors (and no non-2xx)';
/** A share as a whole percentage. */
export const pct = (n: number) => `${(100 * n).toFixed(0)}%`;
/** A measured number, or undefined: JSON writes NaN and Infinity as null. */
const finite = (x: unknown): number | undefined => (typeof x === 'number' && Number.isFinite(x) ? x : undefined);
const n0 = (x: unknown) => finite(x)?.toFixed(0) ?? '?';
/** Memory figures as a range, "137–166 MB" (one figure when they round alike). */
const rangeMb = (mb: number[]) => {
  const [lo, hi] = [Math.min(...mb).toFixed(0), Math.max(...mb).toFixed(0)];
  return `${lo === hi ? lo : `${lo}–${hi}`} MB`;
};

/** The app's CPU per request (its main threads and V8's helpers), µs, from the run's budget. */
function appCpuUs(row: Row | undefined): number | undefined {
  const ms = row?.load.cpu?.msPerRequest;
  return ms ? finite(1000 * (ms['app: main threads'] + ms['app: V8 helper threads (GC, compiler)'])) : undefined;
}

/**
 * Each target with the value this report measured: /api/me/ and verify ≥ 0.3 of the host ceiling,
 * logins ≥ 80% of cores ÷ one hash (read twice: with the hash timed alone, and from the CPUs' time
 * spent hashing inside the runs), worker RSS ≤ 120 MB, refresh ≥ 60% of pgbench's statement, zero
 * errors; and the app's CPU per guarded request, which has no bar in one run (its −40% is against
 * the code before issue 19: `bench:guard-cpu`), for comparing runs.
 */
export function readTargets(r: BenchReport): Reading[] {
  const viaNginx = (name: string) => r.rows.find((row) => row.name === name && row.via === 'nginx');
  const out: Reading[] = [];
  for (const [name, label] of [[ME, '`GET /api/me/`'], [VERIFY, '`POST /api/token/verify/`']] as const) {
    const row = viaNginx(name);
    const ratio = finite(row?.ceilingRatio);
    out.push({
      key: `${label} ≥ 0.3 of the host ceiling`,
      target: `${label} ≥ 0.3 of the host ceiling (${n0(r.ceiling.rps)} req/s; goal 0.5)`,
      value: ratio,
      shown: row && ratio !== undefined ? `${n0(row.load.rps)} req/s, ${ratio.toFixed(2)} of the ceiling` : undefined,
      higherIsBetter: true,
      met: ratio === undefined ? undefined : ratio >= 0.3,
    });
  }
  const login = viaNginx(LOGIN);
  const ref = login?.reference;
  const alone = finite(ref?.ratio);
  out.push({
    key: 'logins ≥ 80% of cores ÷ one argon2id hash',
    target: 'logins ≥ 80% of cores ÷ one argon2id hash (timed alone, before each run)',
    value: alone,
    shown: login && ref && alone !== undefined ? `${n0(login.load.rps)}/s, ${pct(alone)} of ${ref.what}` : undefined,
    higherIsBetter: true,
    met: alone === undefined ? undefined : alone >= 0.8,
  });
  // The same target read from inside the runs: logins/s × a hash's CPU ÷ cores is the share of the
  // CPUs' time that went to hashing. Steadier than a hash timed alone (20.8–33.0 ms in one day).
  const share = finite(ref?.inRun?.share);
  out.push({
    key: 'logins: the CPUs hashing ≥ 80% of the time',
    target: 'logins ≥ 80% of cores ÷ one argon2id hash (the hash as the logins paid it: the CPUs hashing ≥ 80% of the time)',
    value: share,
    shown: !login ? undefined : share !== undefined ? `${n0(login.load.rps)}/s, the CPUs hashing ${pct(share)} of the time (${finite(ref?.inRun?.hashMs)?.toFixed(1) ?? '?'} ms of CPU a hash)` : 'not in this report',
    higherIsBetter: true,
    met: share === undefined ? undefined : share >= 0.8,
  });
  const rss = r.rows.map((row) => finite(row.rssMb)).filter((m): m is number => m !== undefined);
  // What the load adds to: a worker before any request. A login's hash alone adds its 19 MiB block.
  const rest = (r.restRssMb ?? []).map(finite).filter((m): m is number => m !== undefined);
  const atRest = rest.length ? ` (at rest, before the load: ${rangeMb(rest)})` : '';
  out.push({
    key: 'worker RSS ≤ 120 MB under load',
    target: 'worker RSS ≤ 120 MB under load',
    value: rss.length ? Math.max(...rss) : undefined,
    shown: rss.length ? `${rangeMb(rss)}${atRest}` : undefined,
    higherIsBetter: false,
    met: rss.length ? Math.max(...rss) <= 120 : undefined,
  });
  const refresh = viaNginx(REFRESH);
  const ofPgbench = refresh && r.pgbenchTps ? finite(refresh.load.rps / r.pgbenchTps) : undefined;
  out.push({
    key: "refresh ≥ 60% of pgbench's statement",
    target: "refresh ≥ 60% of pgbench's statement",
    value: ofPgbench,
    shown: refresh && r.pgbenchTps && ofPgbench !== undefined ? `${n0(refresh.load.rps)} req/s, ${pct(ofPgbench)} of ${n0(r.pgbenchTps)} tps` : undefined,
    higherIsBetter: true,
    met: ofPgbench === undefined ? undefined : ofPgbench >= 0.6,
  });
  const errors = r.rows.reduce((n, row) => n + row.load.errors, 0);
  const non2xx = r.rows.reduce((n, row) => n + row.load.non2xx, 0);
  out.push({
    key: ERRORS,
    target: 'zero errors (and no non-2xx)',
    value: errors + non2xx,
    shown: `${errors} errors, ${non2xx} non-2xx over ${r.rows.length} scenarios`,
    higherIsBetter: false,
    met: r.rows.length ? errors === 0 && non2xx === 0 : undefined,
  });
  for (const [name, label] of [[ME, '`GET /api/me/`'], [VERIFY, 'verify']] as const) {
    const us = appCpuUs(viaNginx(name));
    out.push({
      key: `the app's CPU per ${label} (main threads and V8's helpers)`,
      target: `the app's CPU per ${label} (main threads and V8's helpers)`,
      value: us,
      shown: us === undefined ? undefined : `${us.toFixed(0)} µs`,
      higherIsBetter: false,
      met: undefined,
    });
  }
  return out;
}

/** The targets as a markdown table: target, measured, met. */
export function targetTable(r: BenchReport): string[] {
  const verdict = (met: boolean | undefined) => (met === undefined ? '' : met ? 'met' : 'not met');
  return ['| target | measured | |', '|---|---|---|', ...readTargets(r).map((t) => `| ${t.target} | ${t.shown ?? 'not run'} | ${verdict(t.met)} |`)];
}

export interface Change {
  target: string;
  then: string;
  now: string;
  /**
   * now against then, as a fraction of then, signed so that negative is worse whichever way the
   * target counts: −0.12 is a ratio 12% lower, or RSS or CPU 12% higher. −Infinity: worse from zero
   * (errors where there were none). Undefined: not measured in this run.
   */
  change: number | undefined;
  /** Worse by more than the tolerance, or a scenario that failed: issue 19's "finding". */
  finding: boolean;
}

/**
 * Each target of the baseline, now against then. A target is worse when its value moved the wrong
 * way; by more than `tolerance` (10% of the baseline's value), that is a finding. Errors are counts:
 * more than the baseline had is a finding whatever the share. A target this run did not measure is
 * listed (a scenario left out with --only), and a scenario that failed is a finding of its own.
 */
export function compareReports(now: BenchReport, then: BenchReport, tolerance = 0.1): Change[] {
  const current = new Map(readTargets(now).map((t) => [t.key, t]));
  const changes: Change[] = [];
  for (const b of readTargets(then)) {
    if (b.value === undefined || b.shown === undefined) continue;
    const t = current.get(b.key);
    if (t?.value === undefined || t.shown === undefined) {
      changes.push({ target: b.key, then: b.shown, now: 'not measured', change: undefined, finding: false });
      continue;
    }
    let change: number;
    if (b.key === ERRORS || b.value === 0) change = t.value === b.value ? 0 : (t.value > b.value) === t.higherIsBetter ? Infinity : -Infinity;
    else change = t.higherIsBetter ? t.value / b.value - 1 : 1 - t.value / b.value;
    changes.push({ target: b.key, then: b.shown, now: t.shown, change, finding: change < -tolerance });
  }
  if (now.failed.length) {
    changes.push({ target: 'every scenario measured', then: then.failed.length ? `failed: ${then.failed.join(', ')}` : 'all', now: `failed: ${now.failed.join(', ')}`, change: -Infinity, finding: true });
  }
  return changes;
}

/** The comparison as a markdown table, findings marked. */
export function changeTable(changes: Change[], baseline: string): string[] {
  const signed = (c: number | undefined) =>
    c === undefined ? '' : Number.isFinite(c) ? `${c >= 0 ? '+' : '−'}${Math.abs(100 * c).toFixed(0)}%` : c > 0 ? 'better' : 'worse';
  return [
    `Against the baseline (${baseline}); a change for the worse of more than 10% is a finding:`,
    '',
    '| target | baseline | this run | change | |',
    '|---|---|---|---|---|',
    ...changes.map((c) => `| ${c.target} | ${c.then} | ${c.now} | ${signed(c.change)} | ${c.finding ? '**finding**' : ''} |`),
  ];
}
