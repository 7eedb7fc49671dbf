// The built app image: production dependencies only, no secrets or test material, a non-root user.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { images, ROOT } from '../support/images';
import { run } from '../support/stack';

// APP_TAG (as compose uses it) keeps checkouts that test at once on one engine off each other's images.
const TAG = `koa-auth-stack-app:image-test${process.env.APP_TAG ? `-${process.env.APP_TAG}` : ''}`;

beforeAll(async () => {
  const built = await run('docker', ['build', '-q', '--build-arg', `NODE_IMAGE=${images().NODE_IMAGE}`, '-t', TAG, ROOT], {
    env: { ...process.env, DOCKER_BUILDKIT: '0' },
  });
  expect(built.code, built.stderr).toBe(0);
}, 600_000);

const inImage = async (script: string) => {
  const r = await run('docker', ['run', '--rm', '--entrypoint', 'sh', TAG, '-c', script]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
};

describe('the app image', () => {
  it('runs as a non-root user', async () => {
    const user = await run('docker', ['image', 'inspect', '-f', '{{.Config.User}}', TAG]);
    expect(user.stdout.trim()).toBe('node');
    expect(await inImage('id -u')).not.toBe('0');
  });

  it('holds no .env, no sources, no tests, no CA bundles from the build, no git', async () => {
    const files = (await inImage('cd /app && find . -path ./node_modules -prune -o -type f -print')).split('\n');
    expect(files.filter((f) => !f.startsWith('./dist/')).sort()).toEqual(
      ['./ecosystem.config.js', './package.json', './scripts/healthcheck.js', './scripts/release.js', './scripts/run.js'].sort(),
    );
    const compiled = files.filter((f) => f.startsWith('./dist/'));
    expect(compiled).toContain('./dist/server.js');
    expect(compiled.filter((f) => !/\.js(\.map)?$/.test(f))).toEqual([]);
    expect(await inImage('find / -xdev \\( -name ".env" -o -name "*.test.*" -o -name "host-ca.pem" -o -name "extra-ca*" -o -name ".git" \\) -not -path "/proc/*" 2>/dev/null | grep -v "^/app/node_modules/" || true')).toBe('');
  });

  it('has production dependencies only', async () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
    const present = await inImage(`cd /app/node_modules && for p in ${Object.keys(pkg.devDependencies).join(' ')}; do [ -e "$p" ] && echo "$p"; done; true`);
    expect(present).toBe('');
    expect(await inImage('test -e /app/node_modules/koa && test -e /app/node_modules/pm2 && echo ok')).toBe('ok');
  });

  it('contains no test keys', async () => {
    const found = await inImage(
      'grep -rlE "test-signing-key-for-integration-tests|e2e-signing-key|BEGIN (EC |RSA )?PRIVATE KEY" /app --include=*.js --include=*.json --include=*.pem 2>/dev/null | grep -v "^/app/node_modules/" || true',
    );
    expect(found).toBe('');
  });

  it('is its base image plus the app, which stays small', async () => {
    const inspect = async (image: string) => {
      const r = await run('docker', ['image', 'inspect', '-f', '{{.Size}} {{json .RootFS.Layers}}', image]);
      expect(r.code, r.stderr).toBe(0);
      const [size, layers] = r.stdout.trim().split(' ', 2) as [string, string];
      return { size: Number(size), layers: JSON.parse(layers) as string[] };
    };
    const base = await inspect(images().NODE_IMAGE);
    const app = await inspect(TAG);
    // The runtime stage starts from the base itself, not from a build stage with its toolchain.
    expect(app.layers.slice(0, base.layers.length)).toEqual(base.layers);
    const added = app.size - base.size;
    console.log(`app image: ${(app.size / 1e6).toFixed(1)} MB, of which the app ${(added / 1e6).toFixed(1)} MB (on ${images().NODE_IMAGE})`);
    // About 29 MB today (dist/ and the pruned production node_modules). Twice that means something
    // slipped in that the checks above do not name: an npm cache, a build stage's files, a new
    // dependency worth a look.
    expect(added).toBeLessThan(60e6);
  });
});
