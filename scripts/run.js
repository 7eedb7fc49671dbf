#!/usr/bin/env node
// Runs an entry point of the app (`server`, `cli`, or `webhooks`, the webhook delivery process): from
// the TypeScript sources through tsx when tsx is installed (a development checkout), else from the
// compiled dist/ (the production image, which has no dev dependencies).
// Usage: node scripts/run.js <server|cli|webhooks> [args…]
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const ENTRIES = { server: 'server', cli: 'cli', webhooks: 'events/server' };
const name = Object.hasOwn(ENTRIES, process.argv[2] ?? '') ? ENTRIES[process.argv[2]] : undefined;
if (!name) {
  process.stderr.write('usage: node scripts/run.js <server|cli|webhooks> [args…]\n');
  process.exit(2);
}
process.argv.splice(2, 1); // the entry point sees its own arguments only

const source = path.join(root, 'app', `${name}.ts`);
let entry = path.join(root, 'dist', `${name}.js`);
if (fs.existsSync(source)) {
  try {
    require('tsx/cjs/api').register();
    entry = source;
  } catch {
    // no tsx: use dist/
  }
}
if (!fs.existsSync(entry)) {
  process.stderr.write(`${entry} is missing: run "npm run build" first\n`);
  process.exit(1);
}
require(entry).main();
