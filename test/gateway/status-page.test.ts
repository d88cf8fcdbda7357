/**
 * The status page at /admin/ (gateway/http/status-page/): its session cookie and the admin guard that
 * takes it, over HTTP; then the page itself in headless Chromium (Debian's `chromium`, driven by
 * playwright-core) in front of the simulator: sign in (a wrong key first), three deployments with their
 * bars, drain one with its button and see it marked while the simulator stops receiving requests for
 * it, the page refreshing itself without a reload, enable it again, sign out. The screenshot is saved as
 * test/output/status-page.png.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { mintSession, SESSION_TTL_MS, sessionValid } from '../../gateway/http/status-page/session.ts';
import type { Simulator } from '../../shared/simulator/index.ts';
import { chat, simulator, uniquePool, until } from '../helpers/fixtures.ts';
import { startGateway, testConfig, type RunningGateway } from '../helpers/gateway.ts';

const ADMIN_KEY = 'status-page-admin-key-0123456789';
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCREENSHOT = join(ROOT, 'test/output/status-page.png');

interface PoolsAnswer {
  now: number;
  pools: Record<string, { strategy: string; deployments: { id: string; drained: boolean; tpm: number | null; rpm: number | null }[] }>;
}

/** The attributes of a Set-Cookie header, lower-cased names (the cookie itself under `name` / `value`). */
function parseSetCookie(header: string): { name: string; value: string; attributes: Map<string, string> } {
  const [pair = '', ...rest] = header.split(';').map((part) => part.trim());
  const at = pair.indexOf('=');
  const attributes = new Map(
    rest.map((part) => {
      const eq = part.indexOf('=');
      return eq < 0 ? [part.toLowerCase(), ''] : [part.slice(0, eq).toLowerCase(), part.slice(eq + 1)];
    }),
  );
  return { name: pair.slice(0, at), value: pair.slice(at + 1), attributes };
}

const get = (url: string, headers: Record<string, string> = {}) =>
  fetch(url, { headers, redirect: 'manual', signal: AbortSignal.timeout(10_000) });
const post = (url: string, headers: Record<string, string> = {}, body?: string) =>
  fetch(url, { method: 'POST', headers, body, redirect: 'manual', signal: AbortSignal.timeout(10_000) });
const login = (url: string, key: string, headers: Record<string, string> = {}) =>
  post(`${url}/admin/login`, { 'content-type': 'application/x-www-form-urlencoded', ...headers }, new URLSearchParams({ key }).toString());

describe('status page', { timeout: 120_000 }, () => {
  let sim: Simulator;
  let gateway: RunningGateway;
  let other: RunningGateway;
  const pool = uniquePool('chat');
  const spare = uniquePool('spare');
  const config = () =>
    testConfig({
      pools: {
        [pool]: {
          strategy: 'round-robin',
          deployments: [
            // rpm is also held per sixth of the window: high enough that round-robin never skips one here.
            { id: 'd1', endpoint: sim.url, tpm: 4000, rpm: 600 },
            { id: 'd2', endpoint: sim.url, tpm: 2000, rpm: 300 },
            { id: 'd3', endpoint: sim.url, tpm: 90, rpm: 100 },
          ],
        },
        [spare]: {
          slowStartMs: 600_000,
          deployments: [
            { id: 'e1', endpoint: sim.url },
            { id: 'e2', endpoint: sim.url, tpm: 500 },
          ],
        },
      },
    });

  before(async () => {
    sim = await simulator(['d1', 'd2', 'd3', 'e1', 'e2']);
    gateway = await startGateway(config(), { adminApiKey: ADMIN_KEY });
    other = await startGateway(config(), { adminApiKey: ADMIN_KEY });
  });
  after(async () => {
    await gateway?.close();
    await other?.close();
    await sim?.close();
  });

  test('the session token: HMAC of its expiry under the admin key; expired, tampered or another key → refused', () => {
    const now = Date.now();
    const token = mintSession(ADMIN_KEY, now);
    assert.ok(!token.includes(ADMIN_KEY), 'the key is not in the token');
    assert.equal(sessionValid(token, ADMIN_KEY, now), true);
    assert.equal(sessionValid(token, ADMIN_KEY, now + SESSION_TTL_MS - 1), true, 'valid to the end of its life');
    assert.equal(sessionValid(token, ADMIN_KEY, now + SESSION_TTL_MS), false, 'expired');
    assert.equal(sessionValid(token, 'another-admin-key', now), false, 'the admin key changed');
    const [version, expiry, mac] = token.split('.') as [string, string, string];
    assert.equal(sessionValid(`${version}.${Number(expiry) + 60_000}.${mac}`, ADMIN_KEY, now), false, 'expiry moved');
    assert.equal(sessionValid(`${version}.${expiry}.${mac.slice(0, -2)}`, ADMIN_KEY, now), false, 'MAC cut');
    assert.equal(sessionValid('', ADMIN_KEY, now), false);
    assert.equal(sessionValid(`${version}.${expiry}`, ADMIN_KEY, now), false);
  });

  test('over HTTP: page and files under a strict CSP, login sets an HttpOnly SameSite=Strict cookie that the admin API takes', async () => {
    assert.equal((await get(`${gateway.url}/admin/pools`)).status, 401, 'no cookie, no key: 401');

    const redirect = await get(`${gateway.url}/admin`);
    assert.deepEqual([redirect.status, redirect.headers.get('location')], [301, '/admin/']);
    const page = await get(`${gateway.url}/admin/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'/);
    assert.equal(page.headers.get('cache-control'), 'no-store');
    const html = await page.text();
    assert.ok(!/<script(?![^>]*\bsrc=)[^>]*>/i.test(html), 'no inline script');
    assert.ok(!/\sstyle=|\son[a-z]+=/i.test(html), 'no inline style or event handler');
    for (const [file, type] of [
      ['app.js', /^text\/javascript/],
      ['style.css', /^text\/css/],
      ['favicon.svg', /^image\/svg\+xml/],
    ] as const) {
      const response = await get(`${gateway.url}/admin/${file}`);
      assert.equal(response.status, 200, file);
      assert.match(response.headers.get('content-type') ?? '', type, file);
      assert.ok((await response.text()).length > 100, file);
    }

    const wrong = await login(gateway.url, 'not-the-admin-key', { 'x-spillway-admin': '1' });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.headers.get('set-cookie'), null, 'no cookie for a wrong key');
    assert.equal((await login(gateway.url, '', { 'x-spillway-admin': '1' })).status, 401, 'empty key');

    const right = await login(gateway.url, ADMIN_KEY, { 'x-spillway-admin': '1' });
    assert.equal(right.status, 204);
    const cookie = parseSetCookie(right.headers.get('set-cookie') ?? '');
    assert.equal(cookie.name, 'spillway_admin');
    assert.ok(!cookie.value.includes(ADMIN_KEY) && cookie.value.length > 20, 'an opaque token, not the key');
    assert.ok(cookie.attributes.has('httponly'), 'HttpOnly');
    assert.equal(cookie.attributes.get('samesite'), 'Strict');
    assert.equal(cookie.attributes.get('path'), '/admin');
    assert.equal(cookie.attributes.get('max-age'), String(SESSION_TTL_MS / 1000));
    assert.ok(!cookie.attributes.has('secure'), 'plain http: not Secure (the browser would never send it back)');
    const behindTls = parseSetCookie(
      (await login(gateway.url, ADMIN_KEY, { 'x-forwarded-proto': 'https' })).headers.get('set-cookie') ?? '',
    );
    assert.ok(behindTls.attributes.has('secure'), 'x-forwarded-proto https: Secure');
    const plainForm = await login(gateway.url, ADMIN_KEY);
    assert.deepEqual(
      [plainForm.status, plainForm.headers.get('location')],
      [303, '/admin/'],
      'a form post without the script goes to the page',
    );

    const withCookie = { cookie: `spillway_admin=${cookie.value}` };
    const pools = await get(`${gateway.url}/admin/pools`, withCookie);
    assert.equal(pools.status, 200, 'the cookie opens /admin/pools');
    const body = (await pools.json()) as PoolsAnswer;
    assert.ok(Math.abs(body.now - Date.now()) < 5000, 'the server clock is in the answer');
    assert.deepEqual(
      body.pools[pool]!.deployments.map((d) => [d.id, d.tpm, d.rpm]),
      [
        ['d1', 4000, 600],
        ['d2', 2000, 300],
        ['d3', 90, 100],
      ],
      'budgets beside usage',
    );
    assert.deepEqual(
      body.pools[spare]!.deployments.map((d) => [d.id, d.tpm, d.rpm]),
      [
        ['e1', null, null],
        ['e2', 500, null],
      ],
    );
    assert.equal((await get(`${other.url}/admin/pools`, withCookie)).status, 200, 'minted by one instance, good on another');
    assert.equal(
      (await get(`${gateway.url}/admin/pools`, { cookie: 'spillway_admin=v1.99999999999.AAAA' })).status,
      401,
      'a forged cookie',
    );

    const action = `${gateway.url}/admin/pools/${pool}/deployments/d3/reset`;
    assert.equal((await post(action, withCookie)).status, 401, 'a POST with the cookie alone (no CSRF header): 401');
    assert.equal((await post(action, { ...withCookie, 'x-spillway-admin': '1' })).status, 200, 'with the header: done');

    const logout = await post(`${gateway.url}/admin/logout`, { ...withCookie, 'x-spillway-admin': '1' });
    assert.equal(logout.status, 204);
    const cleared = parseSetCookie(logout.headers.get('set-cookie') ?? '');
    assert.deepEqual([cleared.name, cleared.value, cleared.attributes.get('max-age')], ['spillway_admin', '', '0']);
    assert.equal((await post(`${gateway.url}/admin/logout`, withCookie)).status, 400, 'sign-out needs the header too');

    const keyless = await startGateway(config());
    try {
      for (const path of ['/admin/', '/admin/app.js', '/admin/pools']) assert.equal((await get(`${keyless.url}${path}`)).status, 404, path);
      assert.equal((await login(keyless.url, ADMIN_KEY)).status, 404, 'no admin key: no login');
    } finally {
      await keyless.close();
    }
    const otherKey = await startGateway(config(), { adminApiKey: 'a-different-admin-key-0123' });
    try {
      assert.equal((await get(`${otherKey.url}/admin/pools`, withCookie)).status, 401, 'a gateway with another admin key refuses it');
    } finally {
      await otherKey.close();
    }
  });

  test('the build copies the page files into dist/ (scripts/copy-assets.mjs)', () => {
    const out = mkdtempSync(join(tmpdir(), 'spillway-assets-'));
    try {
      const script = `import(${JSON.stringify(new URL('../../scripts/copy-assets.mjs', import.meta.url).href)}).then((m) => m.copyAssets(${JSON.stringify(out)}))`;
      const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10_000 });
      assert.equal(run.status, 0, run.stderr);
      for (const file of ['index.html', 'app.js', 'style.css', 'favicon.svg']) {
        assert.ok(existsSync(join(out, 'gateway/http/status-page/assets', file)), `dist/gateway/http/status-page/assets/${file}`);
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  test('in Chromium: sign in, three deployments with bars, drain one with its button, enable it, sign out', async () => {
    assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)`);
    // Something in the windows to draw, and a cooldown with time left on e2.
    for (let i = 0; i < 6; i++) await (await chat(gateway.url, pool)).arrayBuffer();
    await (await chat(gateway.url, spare)).arrayBuffer();
    await gateway.store.cooldown(spare, 'e2', 90_000);
    // e1 just came back (as a passing probe brings a deployment back): its slow start shows.
    await gateway.store.reset(spare, 'e1', { slowStart: true });
    // e2's own headers said it has 5 tokens left of 500: its window is near full. What we had not
    // booked is spread over the window and leaves a share each second (about 8 here), so it stays
    // above 90 % for the few seconds this test needs.
    await gateway.store.observe(spare, 'e2', { tpm: 500, remainingTokens: 5 });

    let browser: Browser | undefined;
    try {
      // A generous launch bound: beside the rest of the suite on 2 cores, a cold Chromium has taken > 15 s in CI.
      browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: 45_000 });
      const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: 'light', locale: 'en-US' });
      const page = await context.newPage();
      page.setDefaultTimeout(5000);
      const problems: string[] = [];
      page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
      page.on('console', (message) => {
        if (message.type() === 'error' && !/401 \(Unauthorized\)/.test(message.text())) problems.push(`console: ${message.text()}`);
      });

      await page.goto(`${gateway.url}/admin/`);
      await page.locator('#sign-in').waitFor({ state: 'visible' });
      assert.equal(await page.locator('#pools').isVisible(), false, 'nothing but the form before signing in');

      await page.fill('#key', 'not-the-admin-key');
      await page.click('#sign-in button[type="submit"]');
      await page.locator('#sign-in-error').waitFor({ state: 'visible' });
      assert.equal(await page.textContent('#sign-in-error'), 'That is not the admin key.');
      assert.deepEqual(await context.cookies(), [], 'no cookie for a wrong key');

      await page.fill('#key', ADMIN_KEY);
      await page.click('#sign-in button[type="submit"]');
      const cards = page.locator(`section[data-pool="${pool}"] article[data-deployment]`);
      await until(async () => (await cards.count()) === 3, 5000, 'three deployment cards');
      assert.equal(await page.locator('#sign-in').isVisible(), false, 'the form is gone');
      assert.deepEqual(await cards.evaluateAll((nodes) => nodes.map((n) => n.getAttribute('data-deployment'))), ['d1', 'd2', 'd3']);

      const [cookie, ...more] = await context.cookies();
      assert.equal(more.length, 0);
      assert.deepEqual(
        [cookie?.name, cookie?.httpOnly, cookie?.sameSite, cookie?.path],
        ['spillway_admin', true, 'Strict', '/admin'],
        'the session cookie as the browser keeps it',
      );
      assert.ok(!cookie!.value.includes(ADMIN_KEY));
      assert.equal(await page.evaluate('document.cookie'), '', 'HttpOnly: the page script cannot read it');

      // Bars: 6 requests over three deployments, round-robin: 2 each, against rpm 600 / 300 / 100.
      const card = (id: string, inPool = pool) => page.locator(`section[data-pool="${inPool}"] article[data-deployment="${id}"]`);
      const requestsText = (id: string) => card(id).locator('.meter').nth(1).locator('.meter-value').textContent();
      await until(async () => (await requestsText('d3')) === '2 / 100 RPM · 2 %', 5000, 'd3 at 2 of 100 requests');
      const width = await card('d3').locator('.meter').nth(1).locator('.fill').getAttribute('style');
      assert.equal(width, 'width: 2%;', 'the bar is as long as the share of the budget');
      assert.match((await card('d1').locator('.meter').first().locator('.meter-value').textContent()) ?? '', /^\d+ \/ 4,000 TPM · \d+ %$/);
      assert.match((await card('e1', spare).textContent()) ?? '', /no TPM budget/);
      assert.match(
        (await card('e1', spare).locator('.badges').textContent()) ?? '',
        /^in rotationslow start · 1\d % of its share · (10 min 00|9 min \d\d) s left$/,
        'a deployment ramping back says how far',
      );
      assert.match((await card('e2', spare).locator('.badges').textContent()) ?? '', /^cooling down · 1 min \d\d s left$/);
      const tokensFill = (id: string, inPool = pool) => card(id, inPool).locator('.meter').first().locator('.fill').getAttribute('class');
      // Told again now: on a loaded machine the browser's start can outlast the few seconds the first telling holds.
      await gateway.store.observe(spare, 'e2', { tpm: 500, remainingTokens: 5 });
      await until(async () => (await tokensFill('e2', spare)) === 'fill high', 5000, 'e2 above 90 % of its tpm: a red bar');
      for (const id of ['d1', 'd2', 'd3']) assert.equal(await card(id).locator('.badges').textContent(), 'in rotation', id);

      // Drain d2 with its button.
      await page.evaluate('window.stillTheSamePage = true');
      const toggle = card('d2').locator('button.toggle');
      assert.equal(await toggle.textContent(), 'Drain');
      await toggle.click();
      await until(async () => (await card('d2').getAttribute('data-drained')) === 'true', 5000, 'd2 marked drained');
      assert.equal(await card('d2').locator('.badges').textContent(), 'drained');
      assert.equal(await toggle.textContent(), 'Enable');
      assert.match((await page.textContent('#notice')) ?? '', /d2 drained for every instance/);

      const snapshot = async () => {
        const response = await get(`${other.url}/admin/pools`, { 'api-key': ADMIN_KEY });
        return ((await response.json()) as PoolsAnswer).pools[pool]!.deployments;
      };
      assert.deepEqual(
        (await snapshot()).map((d) => [d.id, d.drained]),
        [
          ['d1', false],
          ['d2', true],
          ['d3', false],
        ],
        'every instance sees it drained',
      );
      const receivedBefore = sim.stats('d2').received;
      const served: string[] = [];
      for (let i = 0; i < 6; i++) {
        const response = await chat(gateway.url, pool);
        await response.arrayBuffer();
        assert.equal(response.status, 200);
        served.push(String(response.headers.get('x-gateway-deployment')));
      }
      assert.deepEqual(new Set(served), new Set(['d1', 'd3']), 'the others take the requests');
      assert.equal(sim.stats('d2').received, receivedBefore, 'the simulator receives nothing more for d2');

      // The page follows by itself (no reload): d3 now has 5 requests in its window.
      await until(async () => (await requestsText('d3')) === '5 / 100 RPM · 5 %', 5000, 'the page shows the new requests');
      assert.equal(await tokensFill('d3'), 'fill mid', 'd3 at 70 of its 90 tokens: an amber bar');
      assert.equal(await page.evaluate('window.stillTheSamePage'), true, 'not reloaded');
      assert.match(
        (await page.textContent(`section[data-pool="${pool}"] .pool-summary`)) ?? '',
        /^round-robin · 2 of 3 in rotation · \d+ in flight · batch lines: 0 waiting, 0 delayed, 0 running$/,
        'the pool’s batch lane beside its deployments',
      );

      mkdirSync(join(ROOT, 'test/output'), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      const text = (await page.locator('body').innerText()).replace(/\s+/g, ' ');
      for (const expected of [
        pool,
        spare,
        'd1',
        'd2',
        'd3',
        'e1',
        'e2',
        'drained',
        'in rotation',
        'cooling down',
        'Enable',
        'Drain',
        'Sign out',
      ]) {
        assert.ok(text.includes(expected), `the page says ${JSON.stringify(expected)}: ${text}`);
      }

      // Enable it again.
      await toggle.click();
      await until(async () => (await card('d2').getAttribute('data-drained')) === 'false', 5000, 'd2 enabled');
      assert.equal(await card('d2').locator('.badges').textContent(), 'in rotation');
      assert.equal((await snapshot()).find((d) => d.id === 'd2')?.drained, false);
      const again: string[] = [];
      for (let i = 0; i < 3; i++) {
        const response = await chat(gateway.url, pool);
        await response.arrayBuffer();
        again.push(String(response.headers.get('x-gateway-deployment')));
      }
      assert.ok(again.includes('d2'), `d2 is back in rotation: ${again.join(', ')}`);

      // Sign out: the form again, and the page's own calls are refused.
      await page.click('#sign-out');
      await page.locator('#sign-in').waitFor({ state: 'visible' });
      assert.equal(await page.locator('#pools').isVisible(), false);
      assert.equal(await page.evaluate("fetch('pools').then((r) => r.status)"), 401);
      assert.deepEqual(problems, [], 'no script errors');
    } finally {
      await browser?.close();
    }
  });
});
