// What a worker loads: the modules app/server.ts brings in, run for real (tsx's loader in a child
// process), hold no migrator. umzug and its dependencies are 175 modules, and 4.6 MB of RSS among the
// modules a worker loads (docs/PERFORMANCE.md, "A worker's memory, from the libraries up"); the worker
// only checks which migrations are applied (app/db/migrations/index.ts), and the CLI migrates.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '../..');

/** The packages (by their node_modules directory) that requiring `entry` loads. */
function packagesLoadedBy(entry: string): Set<string> {
  const script = `require(${JSON.stringify(path.join(root, entry))}); console.log(JSON.stringify(Object.keys(require.cache)))`;
  const files = JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: root, encoding: 'utf8', timeout: 50_000 })) as string[];
  return new Set(files.map((f) => /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(f)?.[1]).filter((p): p is string => p !== undefined));
}

describe('a worker\'s modules', () => {
  it('do not include umzug (the migrator); the migrator\'s do', () => {
    const worker = packagesLoadedBy('app/server.ts');
    expect(worker.has('koa')).toBe(true); // it loaded the app
    expect(worker.has('umzug')).toBe(false);
    expect(packagesLoadedBy('app/db/migrator.ts').has('umzug')).toBe(true);
  }, 120_000); // two child processes loading and compiling the app: seconds on a busy machine
});
