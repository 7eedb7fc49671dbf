// page.evaluate callbacks run in the browser:
/// <reference lib="dom" />
// Browser clients in a real browser: Debian's Chromium, driven by playwright-core, against the compose
// stack through nginx over HTTPS (Secure cookies need a secure origin, and inside a container the stack
// is not on loopback). Chromium trusts the test certificate by its public key alone. One stack and one
// browser serve every scenario. Screenshots of the docs page, and of every page of a failing scenario,
// go to test-artifacts/browser/ (not committed).
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOCS_CSP } from '../../app/http/docs';
import { ROOT } from '../support/images';
import { reachableHost, startStack, type Stack } from '../support/stack';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = path.join(ROOT, 'test-artifacts/browser');
const USER = { username: 'browser-user', password: 'browser-password-1' };
const ATTACKER_MARK = 'other-origin-page';

let stack: Stack;
let base: string; // the stack's HTTPS origin
let other: https.Server; // a second origin: the same host, another port
let otherBase: string;
let browser: Browser;
let certDir: string;

function spkiHash(certPem: string): string {
  const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

beforeAll(async () => {
  rmSync(ARTIFACTS, { recursive: true, force: true }); // only this run's pictures
  mkdirSync(ARTIFACTS, { recursive: true });
  const { host, bind } = await reachableHost();
  certDir = mkdtempSync(path.join(tmpdir(), 'kas-browser-certs-'));
  execFileSync('bash', [path.join(ROOT, 'scripts/make-dev-cert.sh'), certDir, host]);
  const cert = readFileSync(path.join(certDir, 'tls.crt'), 'utf8');
  const key = readFileSync(path.join(certDir, 'tls.key'), 'utf8');

  // The other origin's page: a form posting to the refresh endpoint, as a cross-site attacker would.
  other = https.createServer({ cert, key }, (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(`<!DOCTYPE html><title>${ATTACKER_MARK}</title><form id="f" method="POST" action="">
      <input name="refresh" value=""><input name="x" value="1"></form>`);
  });
  await new Promise<void>((resolve) => other.listen(0, bind, resolve));

  [stack, browser] = await Promise.all([
    startStack({
      project: `kasbrowser${process.pid}`,
      tlsCertDir: certDir,
      env: {
        NODE_ENV: 'production',
        SIGNING_KEY: 'browser-e2e-signing-key-0123456789abcdefghijklmnopqrstuvwxyz',
        POSTGRES_PASSWORD: 'browser-e2e-db-password',
        WEB_CONCURRENCY: '2',
        LOGIN_BURST: '100',
      },
    }),
    chromium.launch({
      executablePath: CHROMIUM,
      // playwright-core gives each launch a fresh --user-data-dir, which the SPKI list requires.
      args: [
        '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--no-first-run', `--ignore-certificate-errors-spki-list=${spkiHash(cert)}`,
      ],
    }),
  ]);
  base = stack.httpsUrl!;
  otherBase = `https://${stack.host}:${(other.address() as AddressInfo).port}`;
  const r = await stack.exec('app', ['npm', 'run', '-s', 'cli', '--', 'createuser', USER.username, '--password-stdin'], USER.password);
  expect(r.code, r.stderr).toBe(0);
}, 600_000);

afterAll(async () => {
  await browser?.close();
  other?.close();
  await stack?.down({ removeVolumes: true });
  if (certDir) rmSync(certDir, { recursive: true, force: true });
}, 120_000);

type Open = (options?: { userAgent?: string }) => Promise<Page>;

// A machine-level event, not a failure of the code under test: Chromium aborts requests in flight with
// this when any network interface on the host appears or goes (other engines and namespaces on a shared
// machine do that). A scenario that met it is run again from the start, at most twice.
const NETWORK_CHANGED = 'net::ERR_NETWORK_CHANGED';

/**
 * Runs a scenario with fresh browser contexts (made by `open`), closing them after; when it fails,
 * every page it opened is photographed first, and the requests that failed in the browser are named.
 */
async function scenario(name: string, body: (open: Open, attempt: number) => Promise<void>) {
  for (let attempt = 1; ; attempt++) {
    const contexts: BrowserContext[] = [];
    const failedRequests: string[] = [];
    const open: Open = async (options = {}) => {
      const context = await browser.newContext(options);
      contexts.push(context);
      context.on('requestfailed', (r) => failedRequests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
      return context.newPage();
    };
    try {
      await body(open, attempt);
      return;
    } catch (err) {
      const networkChanged = failedRequests.some((f) => f.endsWith(NETWORK_CHANGED)) || String(err).includes(NETWORK_CHANGED);
      if (networkChanged && attempt < 3) {
        console.warn(`${name}: the host's network changed under Chromium (attempt ${attempt}); running the scenario again`);
        continue;
      }
      const pages = contexts.flatMap((c) => c.pages());
      await Promise.all(pages.map((p, i) => p.screenshot({ path: path.join(ARTIFACTS, `${name}-failure-${i}.png`), fullPage: true }).catch(() => {})));
      if (err instanceof Error && failedRequests.length > 0) err.message += `\nrequests that failed in the browser:\n  ${failedRequests.join('\n  ')}`;
      throw err;
    } finally {
      await Promise.all(contexts.map((c) => c.close()));
    }
  }
}

/** Problems a page reports: console errors, uncaught exceptions, requests that failed. */
function problems(page: Page): string[] {
  const seen: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') seen.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => seen.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => seen.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  return seen;
}

interface Answer {
  status: number;
  body: Record<string, unknown> | null;
}

/** fetch() from inside the page, as the page's own script would; the access token lives in `window.access`. */
function call(page: Page, method: string, url: string, options: { json?: unknown; cookie?: boolean; bearer?: boolean; headers?: Record<string, string> } = {}): Promise<Answer> {
  return page.evaluate(
    async ({ method, url, options }) => {
      const w = window as unknown as { access?: string };
      const headers: Record<string, string> = { ...options.headers };
      if (options.json !== undefined) headers['Content-Type'] = 'application/json';
      if (options.cookie) headers['X-Token-Transport'] = 'cookie';
      if (options.bearer) headers.Authorization = `Bearer ${w.access}`;
      const r = await fetch(url, { method, headers, ...(options.json !== undefined ? { body: JSON.stringify(options.json) } : {}) });
      const text = await r.text();
      const body = text ? (JSON.parse(text) as Record<string, unknown>) : null;
      if (typeof body?.access === 'string') w.access = body.access; // kept in memory only
      return { status: r.status, body };
    },
    { method, url, options },
  );
}

/** The stack's own page (the docs page: its policy lets scripts call this origin), logged in with the cookie transport. */
async function loggedIn(page: Page): Promise<Answer> {
  await page.goto(`${base}/api/docs/`);
  const login = await call(page, 'POST', '/api/token/', { json: USER, cookie: true });
  expect(login.status, JSON.stringify(login.body)).toBe(200);
  return login;
}

/** How many requests to the refresh endpoint nginx logged with this method and status. */
async function logged(method: string, status: number): Promise<number> {
  return (await stack.logs('nginx'))
    .split('\n')
    .filter((line) => line.includes('"uri":"/api/token/refresh/"') && line.includes(`"method":"${method}"`) && line.includes(`"status":${status},`)).length;
}

const refreshCookies = async (page: Page) => (await page.context().cookies(`${base}/api/token/`)).filter((c) => c.name === '__Host-refresh');

describe('the docs page', () => {
  it('loads with no console error, lists every endpoint, and its "try it out" login gets a pair', async () => {
    await scenario('docs', async (open) => {
      const page = await open();
      const seen = problems(page);
      const response = await page.goto(`${base}/api/docs/`);
      // The page's own policy, once: nginx adds its default-src 'none' to every other answer only.
      const policies = (await response!.headersArray()).filter((h) => h.name.toLowerCase() === 'content-security-policy');
      expect(policies.map((h) => h.value)).toEqual([DOCS_CSP]);
      expect(await page.evaluate(async () => (await fetch('/api/schema/')).headers.get('content-security-policy'))).toBe(
        "default-src 'none'; frame-ancestors 'none'",
      );
      await page.locator('.opblock').first().waitFor();
      const documented = await page.evaluate(async () => Object.keys(((await (await fetch('/api/schema/')).json()) as { paths: object }).paths));
      const listed = (await page.locator('.opblock-summary-path').allInnerTexts()).map((p) => p.replace(/[\u200b\s]/g, ''));
      expect([...new Set(listed)].sort()).toEqual([...documented].sort());
      await page.screenshot({ path: path.join(ARTIFACTS, 'docs.png'), fullPage: true });

      const login = page.locator('#operations-tokens-tokenObtain');
      await login.locator('.opblock-summary').click();
      await login.getByRole('button', { name: 'Try it out' }).click();
      await login.locator('textarea.body-param__text').fill(JSON.stringify(USER));
      await login.getByRole('button', { name: 'Execute' }).click();
      const answer = login.locator('.live-responses-table .response');
      await answer.waitFor();
      expect((await answer.locator('.response-col_status').innerText()).trim()).toBe('200');
      const pair = JSON.parse(await answer.locator('.response-col_description pre.microlight').first().innerText()) as Record<string, string>;
      expect(Object.keys(pair)).toEqual(['refresh', 'access']);
      expect(pair.access!.split('.')).toHaveLength(3);
      await page.screenshot({ path: path.join(ARTIFACTS, 'docs-try-it-out.png'), fullPage: true });
      expect(seen).toEqual([]);
    });
  });
});

describe('the cookie transport, in a page of the stack', () => {
  it('logs in, keeps the refresh token out of reach of scripts, refreshes from the cookie across a reload, and logs out', async () => {
    await scenario('cookie-flow', async (open) => {
      const page = await open();
      const seen = problems(page);
      const login = await loggedIn(page);
      expect(Object.keys(login.body!)).toEqual(['access']);
      const [cookie] = await refreshCookies(page);
      // __Host-: Secure, Path=/, host-only (no Domain: the browser reports the host itself).
      expect(cookie).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Strict', path: '/', domain: new URL(base).hostname });
      expect(await page.evaluate(() => document.cookie)).not.toContain('refresh');
      expect(await page.evaluate(() => document.cookie)).not.toContain(cookie!.value);

      const me = await call(page, 'GET', '/api/me/', { bearer: true });
      expect(me).toEqual({ status: 200, body: { id: expect.any(Number), username: USER.username } });

      const refreshed = await call(page, 'POST', '/api/token/refresh/', { cookie: true });
      expect(refreshed.status).toBe(200);
      expect(Object.keys(refreshed.body!)).toEqual(['access']);
      const [rotated] = await refreshCookies(page);
      expect(rotated!.value).not.toBe(cookie!.value);

      // A reload loses the access token (memory) but not the cookie.
      await page.reload();
      expect(await page.evaluate(() => (window as unknown as { access?: string }).access)).toBeUndefined();
      expect((await call(page, 'GET', '/api/me/', { bearer: true })).status).toBe(401);
      expect((await call(page, 'POST', '/api/token/refresh/', { cookie: true })).status).toBe(200);
      expect((await call(page, 'GET', '/api/me/', { bearer: true })).status).toBe(200);

      const out = await call(page, 'POST', '/api/token/blacklist/', { cookie: true });
      expect(out).toEqual({ status: 200, body: {} });
      expect(await refreshCookies(page)).toEqual([]);
      const after = await call(page, 'POST', '/api/token/refresh/', { cookie: true });
      expect(after.status).toBe(401);
      expect(seen.filter((p) => !p.includes('401'))).toEqual([]); // the browser logs the 401s it was asked for
    });
  });

  it("runs the README's ten lines as they are", async () => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const snippet = /## Browser clients[\s\S]*?```js\n([\s\S]*?)```/.exec(readme)![1]!;
    expect(snippet.trim().split('\n')).toHaveLength(10);
    await scenario('readme', async (open) => {
      const page = await open();
      await page.goto(`${base}/api/docs/`);
      await page.evaluate(`${snippet}; window.client = { login, refresh, api, logout, spoil: () => { access = 'expired'; } };`);
      const run = (code: string) => page.evaluate(`(async () => { const { login, refresh, api, logout, spoil } = window.client; ${code} })()`);
      expect(await run(`return login(${JSON.stringify(USER.username)}, ${JSON.stringify(USER.password)});`)).toBe(true);
      expect(await run("return (await api('/api/me/')).status;")).toBe(200);
      // A stale access token: api() refreshes from the cookie and tries again.
      expect(await run("spoil(); return (await api('/api/me/')).status;")).toBe(200);
      await run('await logout();');
      expect(await run('return refresh();')).toBe(false);
    });
  });
});

describe('a planted cookie', () => {
  it('cannot shadow or replace the __Host- refresh cookie: the session refreshes on, and the old trick no longer logs out', async () => {
    await scenario('planted-cookie', async (open) => {
      const page = await open();
      await loggedIn(page);
      const [before] = await refreshCookies(page);
      // What a page of a sibling subdomain could do before (it can set cookies for the parent domain;
      // from this origin's own page the cookie jar sees the same): a cookie of the old name with a
      // narrower path, which the browser sends first. And attempts at the new name, which the browser
      // itself refuses: a __Host- cookie with another path, or over an HttpOnly one from a script.
      await page.evaluate(() => {
        document.cookie = '__Secure-refresh=planted; Path=/api/token/refresh/; Secure; SameSite=Strict';
        document.cookie = '__Host-refresh=planted; Path=/api/token/refresh/; Secure';
        document.cookie = '__Host-refresh=planted; Path=/; Secure';
      });
      const jar = await page.context().cookies(`${base}/api/token/refresh/`);
      expect(jar.filter((c) => c.name === '__Host-refresh').map((c) => c.value)).toEqual([before!.value]);
      expect(jar.filter((c) => c.name === '__Secure-refresh').map((c) => c.value)).toEqual(['planted']);
      const refreshed = await call(page, 'POST', '/api/token/refresh/', { cookie: true });
      expect(refreshed.status, JSON.stringify(refreshed.body)).toBe(200);
      const [after] = await refreshCookies(page);
      expect(after!.value).not.toBe(before!.value);
      expect((await call(page, 'GET', '/api/me/', { bearer: true })).status).toBe(200);
    });
  });
});

describe('a page of another origin', () => {
  it('gets no token with a credentialed fetch or a form post, and the session still works', async () => {
    await scenario('other-origin', async (open) => {
      const page = await open();
      await loggedIn(page);
      const [before] = await refreshCookies(page);
      const refreshUrl = `${base}/api/token/refresh/`;

      const attacker = await page.context().newPage();
      await attacker.goto(otherBase);
      expect(await attacker.title()).toBe(ATTACKER_MARK);

      const preflightsBefore = await logged('OPTIONS', 403);
      const postsBefore = await logged('POST', 400);
      // With the transport header: the preflight is refused, so the POST is never sent.
      const withHeader = await attacker.evaluate(async (url) => {
        try {
          const r = await fetch(url, { method: 'POST', credentials: 'include', headers: { 'X-Token-Transport': 'cookie' } });
          return `answered ${r.status}`;
        } catch (err) {
          return String(err);
        }
      }, refreshUrl);
      expect(withHeader).toMatch(/TypeError/);

      // nginx saw the preflight and refused it (the app's 403), and no POST.
      await expect.poll(() => logged('OPTIONS', 403), { timeout: 5_000 }).toBe(preflightsBefore + 1); // the access log is flushed each second
      expect(await logged('POST', 400)).toBe(postsBefore);

      // Without it: the request goes (a simple request, the cookie attached), the cookie is ignored
      // (400: no refresh field), and the page may not read the answer anyway.
      const plain = await attacker.evaluate(async (url) => {
        try {
          const r = await fetch(url, { method: 'POST', credentials: 'include' });
          return `answered ${r.status}`;
        } catch (err) {
          return String(err);
        }
      }, refreshUrl);
      expect(plain).toMatch(/TypeError/);
      await expect.poll(() => logged('POST', 400), { timeout: 5_000 }).toBe(postsBefore + 1);

      // A form post navigates to the answer: the field error, no token.
      await attacker.evaluate((url) => {
        const form = document.getElementById('f') as HTMLFormElement;
        form.action = url;
        form.submit();
      }, refreshUrl);
      await attacker.waitForURL(refreshUrl);
      const shown = await attacker.locator('body').innerText();
      expect(JSON.parse(shown)).toEqual({ refresh: ['This field may not be blank.'] });

      // The cookie was never rotated by those requests, and the session still works.
      expect((await refreshCookies(page))[0]!.value).toBe(before!.value);
      const refreshed = await call(page, 'POST', '/api/token/refresh/', { cookie: true });
      expect(refreshed.status).toBe(200);
      expect((await call(page, 'GET', '/api/me/', { bearer: true })).status).toBe(200);
    });
  });
});

describe('sessions per device', () => {
  it('two browsers as one user: one lists both sessions and ends the other, whose next request is refused', async () => {
    await scenario('sessions', async (open, attempt) => {
      const [laptopAgent, phoneAgent] = [`browser-test laptop ${attempt}`, `browser-test phone ${attempt}`];
      const laptop = await open({ userAgent: laptopAgent });
      const phone = await open({ userAgent: phoneAgent });
      await loggedIn(laptop);
      await phone.goto(`${base}/api/docs/`);
      // A client-written X-Forwarded-For is not believed: the address is the one nginx saw.
      const phoneLogin = await call(phone, 'POST', '/api/token/', { json: USER, cookie: true, headers: { 'X-Forwarded-For': '203.0.113.7' } });
      expect(phoneLogin.status).toBe(200);

      const listed = await call(laptop, 'GET', '/api/sessions/', { bearer: true });
      expect(listed.status).toBe(200);
      const sessions = listed.body as unknown as { id: string; user_agent: string; ip: string; current: boolean }[];
      const mine = sessions.filter((s) => [laptopAgent, phoneAgent].includes(s.user_agent));
      expect(mine.map((s) => [s.user_agent, s.current]).sort()).toEqual([[laptopAgent, true], [phoneAgent, false]]);
      const phoneSession = mine.find((s) => s.user_agent === phoneAgent)!;
      expect(phoneSession.ip).not.toContain('203.0.113.7');
      expect(phoneSession.ip).not.toBe('');

      const ended = await call(laptop, 'DELETE', `/api/sessions/${phoneSession.id}/`, { bearer: true });
      expect(ended.status).toBe(204);
      // Revocations reach every worker by NOTIFY within milliseconds; allow a moment.
      await expect.poll(async () => (await call(phone, 'GET', '/api/me/', { bearer: true })).status, { timeout: 5_000 }).toBe(401);
      expect((await call(phone, 'POST', '/api/token/refresh/', { cookie: true })).status).toBe(401);
      expect((await call(laptop, 'GET', '/api/me/', { bearer: true })).status).toBe(200);
      const left = (await call(laptop, 'GET', '/api/sessions/', { bearer: true })).body as unknown as { id: string }[];
      expect(left.map((s) => s.id)).not.toContain(phoneSession.id);
    });
  });
});
