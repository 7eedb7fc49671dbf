#!/usr/bin/env node
// Releases for `pm2 reload` under docker compose: how a new image's code gets into the running app
// container, so that PM2 rolls the workers onto it one at a time (README, "Upgrades").
//
//   node scripts/release.js install         (in a one-off container of the NEW image:
//                                            docker compose run --rm --no-deps app node scripts/release.js install)
//                                            copies this image's code into the releases volume
//   node scripts/release.js activate [ID]   (in the running app container) points the link PM2 starts
//                                            workers from at release ID (default: the last installed);
//                                            then `pm2 reload api` rolls the workers onto it
//   node scripts/release.js status          the link, and the releases installed
//
// The link (APP_RELEASE_LINK, /srv/koa-auth-stack/current) lives in the container's own filesystem and
// points at the image's code (/app) when the container is created: a new container runs its image, a
// restarted one the release last activated in it. Releases live in the volume mounted at
// /srv/koa-auth-stack/releases, one directory each, named by version and a hash of the code.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const LINK = process.env.APP_RELEASE_LINK || '/srv/koa-auth-stack/current';
const RELEASES = path.join(path.dirname(LINK), 'releases');
const LATEST = path.join(RELEASES, 'LATEST');
const SOURCE = path.resolve(__dirname, '..');
// What a worker runs: the compiled app, its production dependencies, and PM2's configuration.
const PARTS = ['package.json', 'ecosystem.config.js', 'dist', 'node_modules', 'scripts'];
const KEEP = 3;
const NAME = /^[0-9A-Za-z.+-]+-[0-9a-f]{12}$/;

function fail(message) {
  process.stderr.write(`release: ${message}\n`);
  process.exit(1);
}

/** Files under `dir`, sorted, as paths relative to `root`. */
function files(root, dir = root) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...files(root, full));
    else if (entry.isFile()) out.push(path.relative(root, full));
  }
  return out;
}

/** The release's name: the package version and a hash of the code (the same image, the same name). */
function releaseName() {
  const hash = crypto.createHash('sha256');
  const lock = path.join(SOURCE, 'node_modules/.package-lock.json');
  for (const file of [...files(SOURCE, path.join(SOURCE, 'dist')), 'package.json', 'ecosystem.config.js', ...(fs.existsSync(lock) ? ['node_modules/.package-lock.json'] : [])]) {
    hash.update(`${file}\0`).update(fs.readFileSync(path.join(SOURCE, file))).update('\0');
  }
  const { version } = JSON.parse(fs.readFileSync(path.join(SOURCE, 'package.json'), 'utf8'));
  return `${version}-${hash.digest('hex').slice(0, 12)}`;
}

function installed() {
  if (!fs.existsSync(RELEASES)) return [];
  return fs
    .readdirSync(RELEASES)
    .filter((name) => NAME.test(name) && fs.existsSync(path.join(RELEASES, name, 'dist/server.js')))
    .map((name) => ({ name, at: fs.statSync(path.join(RELEASES, name)).mtimeMs }))
    .sort((a, b) => a.at - b.at);
}

function writeAtomically(file, text) {
  const tmp = `${file}.${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

function install() {
  if (!fs.existsSync(RELEASES)) fail(`${RELEASES} is missing: run this in a container of the app service, which mounts the releases volume there`);
  const name = releaseName();
  const target = path.join(RELEASES, name);
  if (fs.existsSync(path.join(target, 'dist/server.js'))) {
    process.stderr.write(`release ${name} is installed already\n`);
  } else {
    // Copied beside, then renamed: a release directory is whole or absent.
    const incoming = path.join(RELEASES, `.incoming-${name}-${process.pid}`);
    fs.rmSync(incoming, { recursive: true, force: true });
    for (const part of PARTS) fs.cpSync(path.join(SOURCE, part), path.join(incoming, part), { recursive: true, verbatimSymlinks: true });
    fs.renameSync(incoming, target);
  }
  const now = new Date();
  fs.utimesSync(target, now, now);
  writeAtomically(LATEST, `${name}\n`);
  // The oldest go, beyond the newest few (this one among them).
  for (const old of installed().slice(0, -KEEP)) fs.rmSync(path.join(RELEASES, old.name), { recursive: true, force: true });
  process.stdout.write(`installed release ${name}\n`);
}

function activate(requested) {
  const name = requested || (fs.existsSync(LATEST) ? fs.readFileSync(LATEST, 'utf8').trim() : '');
  if (!name) fail('no release installed yet (install one first: see README, "Upgrades")');
  if (!NAME.test(name) || !fs.existsSync(path.join(RELEASES, name, 'dist/server.js'))) fail(`no release "${name}" in ${RELEASES}`);
  // A new link beside the old, renamed over it: PM2 sees the old release or the new, never neither.
  const tmp = path.join(path.dirname(LINK), `.current-${process.pid}`);
  fs.rmSync(tmp, { force: true });
  fs.symlinkSync(path.join(RELEASES, name), tmp);
  fs.renameSync(tmp, LINK);
  process.stdout.write(`activated release ${name}: roll the workers onto it with: pm2 reload api\n`);
}

function status() {
  const current = fs.existsSync(LINK) ? fs.realpathSync(LINK) : '(missing)';
  process.stdout.write(`current: ${current}\n`);
  for (const r of installed()) process.stdout.write(`installed: ${r.name}\n`);
}

const [command, arg] = process.argv.slice(2);
if (command === 'install') install();
else if (command === 'activate') activate(arg);
else if (command === 'status') status();
else {
  process.stderr.write('usage: node scripts/release.js install | activate [ID] | status\n');
  process.exit(2);
}
