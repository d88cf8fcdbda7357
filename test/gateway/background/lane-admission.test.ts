/**
 * Background lines in the request path, as the lane sends them (a request marked with the lane's
 * secret, naming its client): admitted only under (1 − reserve) of the budgets and never while an
 * interactive request waits, answered at once with a retry time when refused, never putting a broken
 * pool back; the batch's client and its quota; lane headers kept from upstream; a log line that says
 * `lane: background`; tokens counted apart. A wrong secret is no mark at all.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, test } from 'node:test';
import { randomUUID } from 'node:crypto';
import { createGateway, type Gateway } from '../../../gateway/app.ts';
import { LaneMarker } from '../../../gateway/http/auth.ts';
import { admissionWindowMs } from '../../../gateway/routing/window.ts';
import type { Simulator } from '../../../shared/simulator/index.ts';
import { createStore } from '../../../shared/store/index.ts';
import type { Store } from '../../../shared/store/types.ts';
import { memoryLogger, type LogLine } from '../../helpers/collaborators.ts';
import { chat, simulator, sleep, uniquePool, until } from '../../helpers/fixtures.ts';
import { CLIENT_KEY, testConfig } from '../../helpers/gateway.ts';
import { uniquePrefix } from '../../helpers/store-suite.ts';

/** Scaled time: a 3 s "minute" for the simulator and the gateway alike. */
const WINDOW_MS = 3000;
const SECRET = 'the-lane-secret-of-this-test-0123456789';
const marker = new LaneMarker(SECRET);
/** What the lane sends: its mark and the batch's client. */
const background = (client = 'tests', requestId = `batch_t${randomUUID().slice(0, 8)}_0_1`) => ({
  key: 'no-key',
  headers: { ...marker.headers(client), 'x-request-id': requestId },
});

describe('background lines in the request path', () => {
  let sim: Simulator;
  const running: { gateway: Gateway; store: Store }[] = [];
  before(async () => {
    sim = await simulator([{ name: 'a', tpm: 1000, rpm: 600, completionTokens: 20 }], { windowMs: WINDOW_MS });
  });
  afterEach(() => sim.reset());
  after(async () => {
    await Promise.all(running.map(({ gateway, store }) => gateway.close().then(() => store.close())));
    await sim.close();
  });

  async function gateway(pool: Record<string, unknown>, clients?: { name: string; apiKey: string; tpm?: number }[]) {
    const name = uniquePool();
    const config = testConfig({
      pools: { [name]: { deployments: [{ id: 'a', endpoint: sim.url, tpm: 1000, rpm: 600 }], ...pool } as never },
      gateway: { windowMs: WINDOW_MS },
      clients: clients ?? [{ name: 'tests', apiKey: CLIENT_KEY }],
    });
    const store = createStore({ redisUrl: process.env.REDIS_URL, keyPrefix: uniquePrefix(), windowMs: admissionWindowMs(WINDOW_MS) });
    const { logger, lines } = memoryLogger();
    // No redisUrl: the request path alone (the marked requests are sent by the test, not by a lane).
    const instance = createGateway({ config, store, logger, laneMarker: marker });
    running.push({ gateway: instance, store });
    const { url } = await instance.listen(0);
    return { name, url, lines, instance };
  }
  const requestLines = (lines: LogLine[]) => lines.filter((line) => line.message === 'request');

  test('background work stops at (1 − reserve) of the budget; interactive requests still get the reserve', async () => {
    const { name, url } = await gateway({});
    // 9 prompt + 100 max tokens = 109 reserved each: floor(0.7 × 1000) = 700 hold six, the seventh is refused.
    const statuses: number[] = [];
    let refused: Response | undefined;
    for (let i = 0; i < 7; i++) {
      const response = await chat(url, name, { ...background(), body: { max_tokens: 100 } });
      statuses.push(response.status);
      if (response.status === 429) refused = response;
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200, 429]);
    assert.equal(refused?.headers.get('x-spillway-throttle'), 'pool-full');
    assert.equal(refused?.headers.get('x-gateway-attempts'), null, 'refused before any deployment was tried');
    const retryAfterMs = Number(refused?.headers.get('retry-after-ms'));
    assert.ok(retryAfterMs > 0 && retryAfterMs <= admissionWindowMs(WINDOW_MS), `retry-after-ms ${retryAfterMs}`);
    // Interactive traffic still has its 300 tokens: two more fit (654 + 218 = 872 ≤ 1000).
    for (let i = 0; i < 2; i++) assert.equal((await chat(url, name, { body: { max_tokens: 100 } })).status, 200);
    const seen = sim.recentRequests('a');
    assert.equal(seen.filter((r) => r.clientRequestId?.startsWith('batch_')).length, 6, 'six background requests reached Azure');
    assert.equal(sim.stats('a').throttled, 0);
    // The retry time named now (after the interactive bookings) works: honoured, a background request fits again.
    const later = await chat(url, name, { ...background(), body: { max_tokens: 100 } });
    assert.equal(later.status, 429);
    await sleep(Number(later.headers.get('retry-after-ms')) + 50);
    assert.equal((await chat(url, name, { ...background(), body: { max_tokens: 100 } })).status, 200);
  });

  test('a per-pool reserve overrides background.reserve', async () => {
    const { name, url } = await gateway({ background: { reserve: 0.7 } });
    // floor(0.3 × 1000) = 300: two of 109 fit, the third does not.
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await chat(url, name, { ...background(), body: { max_tokens: 100 } })).status);
    assert.deepEqual(statuses, [200, 200, 429]);
  });

  test('a background line never waits, and is refused while an interactive request waits in the pool’s queue', async () => {
    const { name, url } = await gateway({ maxWaitMs: 5000 });
    // 600 of 1000 used by interactive traffic; a 509-token interactive request then waits for room.
    for (let i = 0; i < 2; i++) assert.equal((await chat(url, name, { body: { max_tokens: 291 } })).status, 200);
    const waiting = chat(url, name, { body: { max_tokens: 500 } });
    await sleep(300);
    // 600 + 59 would be under 700, yet the interactive request ahead of it has the pool first.
    const started = Date.now();
    const refused = await chat(url, name, { ...background(), body: { max_tokens: 50 } });
    assert.equal(refused.status, 429);
    assert.ok(Date.now() - started < 500, 'answered at once, not after maxWaitMs');
    assert.ok(Number(refused.headers.get('retry-after-ms')) >= 1);
    assert.equal((await waiting).status, 200, 'the interactive request got its room');
  });

  test('a background line never puts a broken pool back in rotation', async () => {
    const { name, url, instance } = await gateway({});
    void instance;
    const store = running.at(-1)!.store;
    await store.openCircuit(name, 'a', 60_000);
    const refused = await chat(url, name, background());
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get('x-spillway-throttle'), 'pool-unavailable');
    assert.equal(sim.stats('a').received, 0, 'no rescue: nothing was sent');
    // An interactive request rescues the pool's last deployment, as before.
    assert.equal((await chat(url, name)).status, 200);
  });

  test('the batch’s client and its quota apply; a wrong secret is no mark at all', async () => {
    const clients = [
      { name: 'tests', apiKey: CLIENT_KEY },
      { name: 'small', apiKey: 'small-key', tpm: 150 },
    ];
    const { name, url, lines } = await gateway({}, clients);
    // 149 booked, settled to the 29 used; the next 149 do not fit in 150.
    assert.equal((await chat(url, name, { ...background('small'), body: { max_tokens: 140 } })).status, 200);
    const quota = await chat(url, name, { ...background('small'), body: { max_tokens: 140 } });
    assert.equal(quota.status, 429);
    assert.equal(quota.headers.get('x-spillway-throttle'), 'client-quota');
    assert.match(((await quota.json()) as { error: { message: string } }).error.message, /Client small/);
    // An unknown client, with the right secret: refused like a bad key.
    assert.equal((await chat(url, name, background('nobody'))).status, 401);
    // A wrong secret: the headers count for nothing; without a key that is a 401, with one the key's client.
    const forged = { 'x-spillway-lane': 'guessed', 'x-spillway-client': 'small' };
    assert.equal((await chat(url, name, { key: 'no-key', headers: forged })).status, 401);
    const asTests = await chat(url, name, { headers: forged, body: { max_tokens: 100 } });
    assert.equal(asTests.status, 200, 'an ordinary request of the key’s client (small is over its quota)');
    // The line is written when the request ends, just after its answer left.
    await until(() => requestLines(lines).length === 3, 2000, 'three request lines');
    // In any order: a line is written as its request ends, which may be after the next one's answer.
    const logged = requestLines(lines);
    assert.deepEqual(
      logged.map((line) => [line.client, line.lane, line.status]).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
      [
        ['small', 'background', 200],
        ['small', 'background', 429],
        ['tests', undefined, 200],
      ],
    );
    const refusedLine = lines.find((line) => line.message === 'request refused' && line.lane === 'background');
    assert.ok(refusedLine, 'a refused lane request says so too');
    for (const line of lines) assert.ok(!JSON.stringify(line).includes(SECRET), 'the secret is never logged');
  });

  test('lane headers never go upstream; background tokens and refusals are counted apart', async () => {
    const upstream = await headerRecorder();
    try {
      const name = uniquePool();
      const config = testConfig({ pools: { [name]: { deployments: [{ id: 'rec', endpoint: upstream.url }] } } });
      const store = createStore({ redisUrl: process.env.REDIS_URL, keyPrefix: uniquePrefix() });
      const instance = createGateway({ config, store, logger: memoryLogger().logger, laneMarker: marker });
      running.push({ gateway: instance, store });
      const { url } = await instance.listen(0);
      const answered = await chat(url, name, background('tests', 'batch_hdr_3_1'));
      assert.equal(answered.status, 200);
      const [seen] = upstream.seen;
      assert.ok(seen);
      assert.equal(seen['x-spillway-lane'], undefined);
      assert.equal(seen['x-spillway-client'], undefined);
      assert.equal(seen['x-request-id'], 'batch_hdr_3_1', 'the line’s request id goes upstream');
      assert.equal(answered.headers.get('x-spillway-lane'), null);
      const text = await (await fetch(`${url}/metrics`)).text();
      assert.match(text, new RegExp(`spillway_background_tokens_total\\{pool="${name}",deployment="rec",kind="prompt"\\} 7`));
      assert.doesNotMatch(text, new RegExp(`spillway_tokens_total\\{pool="${name}"`));
      assert.doesNotMatch(text, new RegExp(`spillway_requests_total\\{pool="${name}"`));
    } finally {
      await upstream.close();
    }
  });
});

/** A deployment that answers every chat completion with a fixed body and keeps the headers it got. */
async function headerRecorder(): Promise<{ url: string; seen: IncomingHttpHeaders[]; close(): Promise<void> }> {
  const seen: IncomingHttpHeaders[] = [];
  const server: Server = createServer((req, res) => {
    seen.push(req.headers);
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          id: 'chatcmpl-1',
          object: 'chat.completion',
          choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 7, completion_tokens: 1, total_tokens: 8 },
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
