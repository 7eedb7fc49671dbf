// The bench's targets (scripts/bench/targets.ts): each read from a report as bench.ts writes it with
// --json, and a run set beside an earlier one, where a change for the worse of more than 10% is a
// finding (issue 19). Reports are built here, field by field, as the bench writes them.
import { describe, expect, it } from 'vitest';
import { PARTS, type CpuBudget, type Part } from '../../scripts/bench/cpu-budget';
import { changeTable, compareReports, LOGIN, ME, readTargets, REFRESH, VERIFY, type BenchReport, type Load, type Row } from '../../scripts/bench/targets';

const load = (rps: number, extra: Partial<Load> = {}): Load => ({ rps, p50: 5, p99: 20, non2xx: 0, errors: 0, requests: rps * 10, ...extra });

function budget(msPerRequest: Partial<Record<Part, number>>, hashingShare = 0): CpuBudget {
  const ms = Object.fromEntries(PARTS.map((p) => [p, msPerRequest[p] ?? 0])) as Record<Part, number>;
  return { msPerRequest: ms, totalMs: 0, serverMs: 0, machineBusy: 0.99, machineSteal: 0, hashingShare };
}

interface Shape {
  ceiling?: number;
  me?: number; // ratio to the ceiling
  verify?: number;
  meAppMs?: number;
  login?: { ratio: number; inRun?: number };
  rss?: number[];
  /** The workers at rest, before the load. */
  rest?: number[];
  refresh?: number; // req/s against pgbench's 1000
  errors?: number;
}

function report(s: Shape): BenchReport {
  const ceiling = s.ceiling ?? 20_000;
  const rows: Row[] = [];
  const rss = [...(s.rss ?? [130])];
  const row = (name: string, l: Load, extra: Partial<Row> = {}) => rows.push({ name, via: 'nginx', conns: 64, load: l, rssMb: rss.shift(), ...extra });
  if (s.me !== undefined) {
    const cpu = s.meAppMs === undefined ? {} : { cpu: budget({ 'app: main threads': s.meAppMs * 0.9, 'app: V8 helper threads (GC, compiler)': s.meAppMs * 0.1 }) };
    row(ME, load(s.me * ceiling, { errors: s.errors ?? 0, ...cpu }), { ceilingRatio: s.me });
  }
  if (s.verify !== undefined) row(VERIFY, load(s.verify * ceiling), { ceilingRatio: s.verify });
  if (s.login) {
    const inRun = s.login.inRun === undefined ? {} : { inRun: { share: s.login.inRun, hashMs: 25 } };
    row(LOGIN, load(50), { reference: { ratio: s.login.ratio, what: '2 CPUs / 25.0 ms hash = 80/s', ...inRun } });
  }
  if (s.refresh !== undefined) row(REFRESH, load(s.refresh));
  return { rows, ceiling: load(ceiling), pgbenchTps: s.refresh === undefined ? undefined : 1000, imageSize: 240e6, failed: [], ...(s.rest ? { restRssMb: s.rest } : {}) };
}

const byKey = (r: BenchReport) => new Map(readTargets(r).map((t) => [t.key, t]));

describe("the bench's targets", () => {
  it('reads each target and whether it is met', () => {
    const t = byKey(report({ me: 0.32, verify: 0.28, meAppMs: 0.15, login: { ratio: 0.85, inRun: 0.65 }, rss: [137, 157, 160, 166], refresh: 640 }));
    expect(t.get('`GET /api/me/` ≥ 0.3 of the host ceiling')).toMatchObject({ value: 0.32, met: true, shown: '6400 req/s, 0.32 of the ceiling' });
    expect(t.get('`POST /api/token/verify/` ≥ 0.3 of the host ceiling')).toMatchObject({ value: 0.28, met: false });
    // Logins read twice: the hash timed alone says met, the CPUs' time spent hashing says not.
    expect(t.get('logins ≥ 80% of cores ÷ one argon2id hash')).toMatchObject({ value: 0.85, met: true });
    expect(t.get('logins: the CPUs hashing ≥ 80% of the time')).toMatchObject({ value: 0.65, met: false, shown: '50/s, the CPUs hashing 65% of the time (25.0 ms of CPU a hash)' });
    expect(t.get('worker RSS ≤ 120 MB under load')).toMatchObject({ value: 166, met: false, shown: '137–166 MB' });
    expect(t.get("refresh ≥ 60% of pgbench's statement")).toMatchObject({ value: 0.64, met: true });
    expect(t.get('zero errors (and no non-2xx)')).toMatchObject({ value: 0, met: true });
    expect(t.get("the app's CPU per `GET /api/me/` (main threads and V8's helpers)")).toMatchObject({ shown: '150 µs', met: undefined });
    expect(t.get("the app's CPU per `GET /api/me/` (main threads and V8's helpers)")!.value).toBeCloseTo(150);
  });

  it('gives the workers at rest beside their RSS under load, when the report has them', () => {
    const rss = (r: BenchReport) => byKey(r).get('worker RSS ≤ 120 MB under load');
    expect(rss(report({ me: 0.3, rss: [139], rest: [105.8, 105.49] }))).toMatchObject({ value: 139, met: false, shown: '139 MB (at rest, before the load: 105–106 MB)' });
    expect(rss(report({ me: 0.3, rss: [119.6], rest: [105.8, 106.2] }))).toMatchObject({ value: 119.6, met: true, shown: '120 MB (at rest, before the load: 106 MB)' });
  });

  it('says what a report did not measure', () => {
    const t = byKey(report({ me: 0.33, login: { ratio: 0.5 } })); // a report from before the in-run reading
    expect(t.get('`POST /api/token/verify/` ≥ 0.3 of the host ceiling')).toMatchObject({ value: undefined, shown: undefined, met: undefined });
    expect(t.get('logins: the CPUs hashing ≥ 80% of the time')).toMatchObject({ value: undefined, shown: 'not in this report', met: undefined });
    expect(t.get("refresh ≥ 60% of pgbench's statement")!.met).toBeUndefined();
  });

  describe('a run against a baseline', () => {
    const base = report({ ceiling: 20_000, me: 0.32, verify: 0.3, meAppMs: 0.15, login: { ratio: 0.6, inRun: 0.65 }, rss: [130, 140], refresh: 700 });
    const findings = (now: BenchReport) => compareReports(now, base).filter((c) => c.finding).map((c) => c.target);

    it('finds nothing in the same run', () => {
      expect(findings(base)).toEqual([]);
      expect(compareReports(base, base).every((c) => c.change === 0)).toBe(true);
    });

    it('matches targets across runs whose ceilings differ', () => {
      const now = report({ ceiling: 23_000, me: 0.32, verify: 0.3, meAppMs: 0.15, login: { ratio: 0.6, inRun: 0.65 }, rss: [130, 140], refresh: 700 });
      expect(compareReports(now, base).map((c) => c.target)).toContain('`GET /api/me/` ≥ 0.3 of the host ceiling');
      expect(findings(now)).toEqual([]);
    });

    it('marks a change for the worse of more than 10% of the baseline, whichever way the target counts', () => {
      // 11% worse each way: verify's ratio lower, RSS and the app's CPU higher. 9% worse: not a finding.
      const now = report({ me: 0.32 * 0.91, verify: 0.3 * 0.89, meAppMs: 0.15 * 1.11, login: { ratio: 0.6, inRun: 0.65 }, rss: [130, 140 * 1.11], refresh: 700 });
      expect(findings(now).sort()).toEqual(
        [
          '`POST /api/token/verify/` ≥ 0.3 of the host ceiling',
          "the app's CPU per `GET /api/me/` (main threads and V8's helpers)",
          'worker RSS ≤ 120 MB under load',
        ].sort(),
      );
      const change = new Map(compareReports(now, base).map((c) => [c.target, c.change]));
      expect(change.get('`GET /api/me/` ≥ 0.3 of the host ceiling')).toBeCloseTo(-0.09);
      expect(change.get('worker RSS ≤ 120 MB under load')).toBeCloseTo(-0.11); // 140 → 155.4 MB
      const slightly = report({ me: 0.32, verify: 0.3, meAppMs: 0.15 * 1.09, login: { ratio: 0.6, inRun: 0.65 }, rss: [130, 140 * 1.09], refresh: 700 });
      expect(findings(slightly)).toEqual([]);
    });

    it('reads a change for the better as one', () => {
      const now = report({ me: 0.4, verify: 0.3, meAppMs: 0.1, login: { ratio: 0.6, inRun: 0.8 }, rss: [120, 125], refresh: 700 });
      const change = new Map(compareReports(now, base).map((c) => [c.target, c.change]));
      expect(change.get('`GET /api/me/` ≥ 0.3 of the host ceiling')).toBeCloseTo(0.25);
      expect(change.get("the app's CPU per `GET /api/me/` (main threads and V8's helpers)")).toBeCloseTo(1 / 3); // 150 → 100 µs
      expect(change.get('logins: the CPUs hashing ≥ 80% of the time')).toBeCloseTo(0.8 / 0.65 - 1);
      expect(findings(now)).toEqual([]);
    });

    it('finds a value gone to zero, and any error where the baseline had none', () => {
      const now = report({ me: 0.32, verify: 0.3, meAppMs: 0.15, login: { ratio: 0.6, inRun: 0 }, rss: [130, 140], refresh: 700, errors: 3 });
      expect(findings(now).sort()).toEqual(['logins: the CPUs hashing ≥ 80% of the time', 'zero errors (and no non-2xx)']);
      expect(changeTable(compareReports(now, base), 'base.json').find((l) => l.startsWith('| zero errors'))).toBe(
        '| zero errors (and no non-2xx) | 0 errors, 0 non-2xx over 4 scenarios | 3 errors, 0 non-2xx over 4 scenarios | worse | **finding** |',
      );
      // And the other way: errors gone is better, not a finding.
      expect(compareReports(base, now).find((c) => c.target === 'zero errors (and no non-2xx)')).toMatchObject({ change: Infinity, finding: false });
    });

    it('lists what this run did not measure, and finds a scenario that failed', () => {
      const left = report({ me: 0.32, meAppMs: 0.15, login: { ratio: 0.6 }, rss: [130, 140] }); // --only me,login, before the in-run reading
      const notMeasured = compareReports(left, base).filter((c) => c.now === 'not measured').map((c) => c.target);
      expect(notMeasured.sort()).toEqual(
        [
          '`POST /api/token/verify/` ≥ 0.3 of the host ceiling',
          'logins: the CPUs hashing ≥ 80% of the time',
          "refresh ≥ 60% of pgbench's statement",
        ].sort(), // (the app's CPU per verify: not in the baseline either)
      );
      expect(findings(left)).toEqual([]);
      const failed = { ...left, failed: ['login'] };
      expect(compareReports(failed, base).filter((c) => c.finding)).toEqual([
        { target: 'every scenario measured', then: 'all', now: 'failed: login', change: -Infinity, finding: true },
      ]);
    });

    it('reads a number JSON wrote as null (NaN, Infinity) as not measured', () => {
      const saved = JSON.parse(JSON.stringify(report({ me: Number.NaN, verify: 0.3, meAppMs: 0.15, login: { ratio: Number.POSITIVE_INFINITY, inRun: 0.65 }, rss: [130, 140], refresh: 700 }))) as BenchReport;
      const t = byKey(saved);
      expect(t.get('`GET /api/me/` ≥ 0.3 of the host ceiling')).toMatchObject({ value: undefined, met: undefined });
      expect(t.get('logins ≥ 80% of cores ÷ one argon2id hash')).toMatchObject({ value: undefined, met: undefined });
      expect(compareReports(saved, base).find((c) => c.target.startsWith('`GET /api/me/`'))!.now).toBe('not measured');
    });
  });
});
