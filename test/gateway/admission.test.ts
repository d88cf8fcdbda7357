import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import type { Simulator } from '../../shared/simulator/index.ts';
import type { PoolLayout } from '../../shared/store/types.ts';
import { CLIENT_KEY, UPSTREAM_KEY, startGateway, testConfig, type RunningGateway } from '../helpers/gateway.ts';
import { chat, simulator, sleep, uniquePool, until } from '../helpers/fixtures.ts';
import { scrape, value } from '../helpers/metrics.ts';
import { admissionWindowMs } from '../../gateway/routing/window.ts';
import { DEFAULT_KEY_PREFIX } from '../../shared/store/constants.ts';
import { KeyLayout } from '../../shared/store/keys.ts';
import type { RedisStore } from '../../shared/store/redis-store.ts';

/** Scaled time: a 6 s "minute" for the simulator and the gateway alike. */
const WINDOW_MS = 6000;
/** "Hello!" costs ceil(6/4) = 2 prompt tokens in Azure's arrival estimate, 9 by the tokenizer (chat overhead included). */
const PROMPT_TOKENS = 9;

describe('token-aware admission', () => {
  let sim: Simulator;
  const running: RunningGateway[] = [];
  before(async () => {
    sim = await simulator(
      [
        { name: 'a', tpm: 1000, rpm: 600, completionTokens: 100 },
        { name: 'b', tpm: 1000, rpm: 600, completionTokens: 100 },
        { name: 'spill', tpm: 100_000, rpm: 6000, completionTokens: 100 },
        { name: 'ptu', ptu: { tokensPerMinute: 100_000 }, completionTokens: 10 },
        { name: 'slow', tpm: 1000, rpm: 600, completionTokens: 20, latency: { ttftMs: 0, perTokenMs: 100 } },
      ],
      { windowMs: WINDOW_MS },
    );
  });
  afterEach(() => sim.reset());
  after(async () => {
    await Promise.all(running.map((g) => g.close()));
    await sim.close();
  });

  async function gateway(
    pool: Record<string, unknown>,
    extra: { clients?: { name: string; apiKey: string; tpm?: number; rpm?: number }[] } = {},
  ) {
    const name = uniquePool();
    const g = await startGateway(testConfig({ pools: { [name]: pool as never }, gateway: { windowMs: WINDOW_MS }, ...extra }));
    running.push(g);
    return { name, g };
  }
  const ab = (extra: Record<string, unknown> = {}) => [
    { id: 'a', endpoint: '', tpm: 1000, rpm: 600, ...extra },
    { id: 'b', endpoint: '', tpm: 1000, rpm: 600, ...extra },
  ];
  const withEndpoint = (deployments: ({ id: string } & Record<string, unknown>)[]) => deployments.map((d) => ({ ...d, endpoint: sim.url }));
  const layoutOf = (name: string, ids: string[]): PoolLayout => ({
    name,
    strategy: 'least-requests',
    deployments: ids.map((id) => ({ id, priority: 1, weight: 1 })),
  });

  test('a deployment without room is not chosen: the gateway answers 429 before Azure would', async () => {
    const { name, g } = await gateway({ deployments: withEndpoint(ab()) });
    // Each request reserves 9 + 300 tokens: three fit in a 1000-token deployment, six in the pool.
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await chat(g.url, name, { body: { max_tokens: 300 } })).status);
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200, 429, 429]);
    assert.equal(sim.stats('a').throttled + sim.stats('b').throttled, 0, 'no upstream 429');
    assert.equal(sim.stats('a').received + sim.stats('b').received, 6);
  });

  test('the saturation 429 names a retry time that works when honoured', async () => {
    const { name, g } = await gateway({ deployments: withEndpoint(ab()) });
    for (let i = 0; i < 6; i++) assert.equal((await chat(g.url, name, { body: { max_tokens: 300 } })).status, 200);
    const refused = await chat(g.url, name, { body: { max_tokens: 300 } });
    assert.equal(refused.status, 429);
    const body = (await refused.json()) as { error: { message: string } };
    assert.match(body.error.message, /token or request budget/);
    const retryAfterMs = Number(refused.headers.get('retry-after-ms'));
    assert.ok(
      retryAfterMs > 0 && retryAfterMs <= admissionWindowMs(WINDOW_MS),
      `retry-after-ms ${retryAfterMs}: within the gateway's window`,
    );
    assert.equal(refused.headers.get('retry-after'), String(Math.ceil(retryAfterMs / 1000)));
    await sleep(retryAfterMs + 50);
    const honoured = await chat(g.url, name, { body: { max_tokens: 300 } });
    assert.equal(honoured.status, 200);
    assert.equal(sim.stats('a').throttled + sim.stats('b').throttled, 0);
  });

  test('priority tiers spill to the next tier when the preferred one lacks room, before any 429', async () => {
    const { name, g } = await gateway({
      deployments: withEndpoint([
        { id: 'a', tpm: 1000, rpm: 600, priority: 1 },
        { id: 'spill', tpm: 100_000, rpm: 6000, priority: 2 },
      ]),
    });
    const served: string[] = [];
    for (let i = 0; i < 5; i++) {
      const response = await chat(g.url, name, { body: { max_tokens: 300 } });
      assert.equal(response.status, 200);
      served.push(String(response.headers.get('x-gateway-deployment')));
    }
    assert.deepEqual(served, ['a', 'a', 'a', 'spill', 'spill']);
    assert.equal(sim.stats('a').throttled, 0);
  });

  test('with maxWaitMs a saturated request waits for room instead of failing', async () => {
    const { name, g } = await gateway({ maxWaitMs: WINDOW_MS + 2000, deployments: withEndpoint([{ id: 'a', tpm: 1000, rpm: 600 }]) });
    for (let i = 0; i < 3; i++) assert.equal((await chat(g.url, name, { body: { max_tokens: 300 } })).status, 200);
    const started = Date.now();
    const waited = await chat(g.url, name, { body: { max_tokens: 300 } });
    assert.equal(waited.status, 200);
    assert.ok(Date.now() - started >= 1000, 'it waited for budget to leave the window');
    assert.equal(sim.stats('a').throttled, 0);
  });

  test('waiters are served first come, first served across instances', async () => {
    const name = uniquePool();
    const config = testConfig({
      pools: { [name]: { maxWaitMs: 3 * WINDOW_MS, deployments: withEndpoint([{ id: 'a', tpm: 1000, rpm: 600 }]) } },
      gateway: { windowMs: WINDOW_MS },
    });
    const [one, two] = [await startGateway(config), await startGateway(config)];
    running.push(one, two);
    // The three fillers land in different 100 ms buckets, so room comes back one request at a time
    // and each grant is a separate event (a bucket freeing room for several would grant them at once).
    for (let i = 0; i < 3; i++) {
      assert.equal((await chat(one.url, name, { body: { max_tokens: 300 } })).status, 200);
      await sleep(WINDOW_MS / 60 + 50);
    }
    const order: string[] = [];
    const waiter = async (label: string, url: string) => {
      const response = await chat(url, name, { body: { max_tokens: 300 }, signal: AbortSignal.timeout(30_000) });
      assert.equal(response.status, 200);
      order.push(label);
    };
    const first = waiter('first', one.url);
    await sleep(150);
    const second = waiter('second', two.url);
    await sleep(150);
    const third = waiter('third', one.url);
    // All three wait in the pool's one queue that both instances share (in Redis), not each on its own.
    const queue = new KeyLayout(DEFAULT_KEY_PREFIX).queue(name).order;
    await until(async () => (await (one.store as RedisStore).client.zcard(queue)) === 3, 3000, 'three tickets in the shared queue');
    await Promise.all([first, second, third]);
    assert.deepEqual(order, ['first', 'second', 'third']);
  });

  test('a stream that did not ask for usage gets none, yet the window is charged exactly', async () => {
    const { name, g } = await gateway({ deployments: withEndpoint([{ id: 'ptu', tpm: 100_000 }]) });
    const response = await chat(g.url, name, { stream: true, body: { max_tokens: 50 } });
    const text = await response.text();
    assert.ok(!text.includes('"usage"'), 'no usage chunk and no usage:null in the client stream');
    assert.match(text, /"finish_reason":"length"|"finish_reason":"stop"/);
    assert.ok(text.trimEnd().endsWith('data: [DONE]'));
    const seen = sim.recentRequests('ptu').at(-1);
    assert.equal(seen?.stream, true);
    // PTU corrects to the actual cost: 9 prompt + 10 completion tokens, not the 59 reserved.
    await until(
      async () => (await g.store.snapshot(layoutOf(name, ['ptu'])))[0]?.tokensInWindow === PROMPT_TOKENS + 10,
      2000,
      'the charge to be reconciled',
    );
  });

  test('a client that asked for usage still gets it', async () => {
    const { name, g } = await gateway({ deployments: withEndpoint([{ id: 'ptu', tpm: 100_000 }]) });
    const response = await chat(g.url, name, { stream: true, body: { max_tokens: 50, stream_options: { include_usage: true } } });
    const text = await response.text();
    assert.match(text, /"choices":\[\],.*"usage":\{"completion_tokens":10/);
  });

  test('a Standard deployment keeps the arrival reservation, as Azure charges it', async () => {
    const { name, g } = await gateway({ deployments: withEndpoint([{ id: 'a', tpm: 1000, rpm: 600 }]) });
    assert.equal((await chat(g.url, name, { body: { max_tokens: 300 } })).status, 200);
    const [a] = await g.store.snapshot(layoutOf(name, ['a']));
    assert.equal(a?.tokensInWindow, PROMPT_TOKENS + 300);
  });

  test("Azure's x-ratelimit-remaining-tokens corrects the window when others use the deployment", async () => {
    const { name, g } = await gateway({ deployments: withEndpoint([{ id: 'a', tpm: 1000, rpm: 600 }]) });
    // Someone else spends 800 of a's tokens directly, past the gateway.
    const direct = await fetch(`${sim.url}/openai/deployments/a/chat/completions?api-version=2024-10-21`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': UPSTREAM_KEY },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 798 }),
    });
    assert.equal(direct.status, 200);
    assert.equal((await chat(g.url, name, { body: { max_tokens: 10 } })).status, 200);
    // What was learnt is spread over the window and leaves a share each bucket (about 13 tokens per
    // 100 ms here), so by the time it is read a bucket or two of it may have left already.
    await until(
      async () => ((await g.store.snapshot(layoutOf(name, ['a'])))[0]?.tokensInWindow ?? 0) >= 780,
      2000,
      "the window to learn the other client's use",
    );
    const refused = await chat(g.url, name, { body: { max_tokens: 300 } });
    assert.equal(refused.status, 429, 'no room left: refused by the gateway, not by Azure');
    assert.equal(sim.stats('a').throttled, 0);
  });

  test('the deployment’s figures are learnt when its headers arrive, not when a long response ends', async () => {
    const { name, g } = await gateway({ deployments: withEndpoint([{ id: 'slow', tpm: 1000, rpm: 600 }]) });
    // Someone else books 800 of the deployment's tokens past the gateway (charged on arrival, then gone).
    const other = new AbortController();
    const direct = await fetch(`${sim.url}/openai/deployments/slow/chat/completions?api-version=2024-10-21`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': UPSTREAM_KEY },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 798, stream: true }),
      signal: other.signal,
    });
    assert.equal(direct.status, 200);
    other.abort();
    // A stream of 20 tokens, one per 100 ms: its headers come at once, its end 2 s later.
    const streaming = await chat(g.url, name, { stream: true, body: { max_tokens: 20 } });
    assert.equal(streaming.status, 200);
    const layout = layoutOf(name, ['slow']);
    // The deployment's count: 800 + its own estimate of this request (2 + 20), less what has left since: a
    // learnt deficit is spread over the past minute's 60 buckets and leaves a share (800 / 60) per bucket,
    // so a poll that lands a few buckets after the observation sees a little less (unlearnt: 22).
    await until(
      async () => ((await g.store.snapshot(layout))[0]?.tokensInWindow ?? 0) >= 800 + 22 - 3 * Math.ceil(800 / 60),
      3000,
      'the window to learn the other use',
    );
    assert.equal(sim.stats('slow').inFlight, 1, 'learnt while the response was still streaming');
    await streaming.text();
  });

  test('a quota exhaustion (retry after a day) takes the deployment out for that long', async () => {
    const { name, g } = await gateway({ deployments: withEndpoint(ab()) });
    sim.setFault('a', { fault: { kind: 'storm-429', retryAfterMs: 86_400_000 } });
    sim.setFault('b', { fault: { kind: 'storm-429', retryAfterMs: 86_400_000 } });
    const response = await chat(g.url, name);
    assert.equal(response.status, 429);
    const [a] = await g.store.snapshot(layoutOf(name, ['a', 'b']));
    assert.ok(a && a.cooldownUntil - Date.now() > 86_000_000, 'cooled down for a day');
    // Counted as a quota exhaustion, not as a per-minute throttle.
    const metrics = await scrape(g.url);
    for (const id of ['a', 'b']) {
      assert.equal(value(metrics, 'spillway_cooldowns_total', { pool: name, deployment: id, kind: 'quota' }), 1, `${id}: kind="quota"`);
      assert.equal(value(metrics, 'spillway_cooldowns_total', { pool: name, deployment: id, kind: 'rate' }), 0, `${id}: no kind="rate"`);
    }
  });

  test('a client over its quota gets 429 with its remaining figures; other clients are not starved', async () => {
    const clients = [
      { name: 'greedy', apiKey: 'greedy-client-key', tpm: 1000 },
      { name: 'polite', apiKey: CLIENT_KEY, tpm: 5000 },
    ];
    const { name, g } = await gateway({ deployments: withEndpoint([{ id: 'spill', tpm: 100_000, rpm: 6000 }]) }, { clients });
    // Each request reserves 309 tokens and is charged its real 109 (9 prompt + 100 completion):
    // after seven, 763 are used and the eighth's 309 no longer fit.
    const greedy: Response[] = [];
    for (let i = 0; i < 8; i++) {
      greedy.push(await chat(g.url, name, { key: 'greedy-client-key', body: { max_tokens: 300 } }));
      // The quota is settled just after the response ends; give that round trip time before the next.
      await sleep(50);
    }
    assert.deepEqual(
      greedy.map((r) => r.status),
      [200, 200, 200, 200, 200, 200, 200, 429],
    );
    assert.equal(greedy[0]?.headers.get('x-ratelimit-remaining-tokens'), String(1000 - (PROMPT_TOKENS + 300)));
    assert.equal(
      greedy[1]?.headers.get('x-ratelimit-remaining-tokens'),
      String(1000 - (PROMPT_TOKENS + 100) - (PROMPT_TOKENS + 300)),
      'the first was reconciled to its real usage',
    );
    const refused = greedy[7]!;
    assert.ok(Number(refused.headers.get('retry-after-ms')) > 0);
    assert.ok(refused.headers.get('x-ratelimit-remaining-tokens') !== null);
    assert.match(((await refused.json()) as { error: { message: string } }).error.message, /greedy has exceeded its token rate limit/);
    const polite = await chat(g.url, name, { body: { max_tokens: 300 } });
    assert.equal(polite.status, 200, 'the other client is served');
    // Quotas are per client: greedy's 763 tokens are not counted against polite's own 5000.
    assert.equal(polite.headers.get('x-ratelimit-remaining-tokens'), String(5000 - (PROMPT_TOKENS + 300)));
  });

  test('a request the full pool refused costs its client no tokens', async () => {
    const clients = [{ name: 'team', apiKey: 'team-client-key', tpm: 10_000 }];
    const { name, g } = await gateway({ deployments: withEndpoint([{ id: 'a', tpm: 1000, rpm: 600 }]) }, { clients });
    const send = async () => {
      const response = await chat(g.url, name, { key: 'team-client-key', body: { max_tokens: 300 } });
      await response.arrayBuffer();
      await sleep(50); // the quota is settled just after the response ends
      return response;
    };
    // Three reservations of 309 fill the 1000-token deployment; each is charged its real 109.
    for (let i = 0; i < 3; i++) assert.equal((await send()).status, 200);
    const full = await send();
    assert.equal(full.status, 429, 'the pool is full: no deployment is reached');
    // The refused request's 309 went back: only the three real charges and this booking remain.
    const next = await send();
    assert.equal(next.status, 429);
    assert.equal(next.headers.get('x-ratelimit-remaining-tokens'), String(10_000 - 3 * (PROMPT_TOKENS + 100) - (PROMPT_TOKENS + 300)));
  });

  test('a short 429 is counted as a rate cooldown, not a quota exhaustion', async () => {
    const { name, g } = await gateway({
      deployments: withEndpoint([
        { id: 'a', tpm: 1000, rpm: 600, priority: 1 },
        { id: 'b', tpm: 1000, rpm: 600, priority: 2 },
      ]),
    });
    sim.setFault('a', { fault: { kind: 'storm-429', retryAfterMs: 1500 }, count: 1 });
    const response = await chat(g.url, name);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-gateway-deployment'), 'b');
    const [a] = await g.store.snapshot(layoutOf(name, ['a', 'b']));
    assert.ok(a && a.cooldownUntil - Date.now() > 0 && a.cooldownUntil - Date.now() <= 1600, 'cooled down for its retry-after');
    const metrics = await scrape(g.url);
    assert.equal(value(metrics, 'spillway_cooldowns_total', { pool: name, deployment: 'a', kind: 'rate' }), 1);
    assert.equal(value(metrics, 'spillway_cooldowns_total', { pool: name, deployment: 'a', kind: 'quota' }), 0);
  });

  test('a stream on an api-version that predates stream_options is served as is, usage not asked for upstream', async () => {
    const { name, g } = await gateway({ deployments: withEndpoint([{ id: 'a', tpm: 1000, rpm: 600 }]) });
    const response = await fetch(`${g.url}/openai/deployments/${name}/chat/completions?api-version=2024-06-01`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': CLIENT_KEY },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 5, stream: true }),
      signal: AbortSignal.timeout(10_000),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events = (await response.text()).split('\n\n').filter((event) => event !== '');
    assert.equal(events.at(-1), 'data: [DONE]');
    const chunks = events
      .slice(0, -1)
      .map(
        (event) =>
          JSON.parse(event.slice('data: '.length)) as { choices: { delta?: { content?: string }; finish_reason: string | null }[] },
      );
    // Prompt annotations, role, five tokens, finish: no usage chunk, as the client asked for none.
    assert.equal(chunks.length, 1 + 1 + 5 + 1);
    assert.equal(
      chunks
        .map((chunk) => chunk.choices[0]?.delta?.content ?? '')
        .join('')
        .trim()
        .split(/\s+/).length,
      5,
    );
    assert.equal(chunks.at(-1)?.choices[0]?.finish_reason, 'length');
    assert.ok(!events.some((event) => event.includes('"usage"')));
    const seen = sim.recentRequests('a').at(-1);
    assert.deepEqual([seen?.apiVersion, seen?.stream, seen?.status], ['2024-06-01', true, 200]);
  });

  test('a request that waited maxWaitMs for room in vain gets 429 with a retry time', async () => {
    const { name, g } = await gateway({ maxWaitMs: 300, deployments: withEndpoint([{ id: 'a', tpm: 1000, rpm: 600 }]) });
    for (let i = 0; i < 3; i++) assert.equal((await chat(g.url, name, { body: { max_tokens: 300 } })).status, 200);
    const started = Date.now();
    // Room comes back only after about a window (6 s) and the deadline (deadlineMs) is 120 s: only the
    // 300 ms of maxWaitMs can end the wait before this client gives up after 3 s.
    const refused = await chat(g.url, name, { body: { max_tokens: 300 }, signal: AbortSignal.timeout(3000) });
    const waitedMs = Date.now() - started;
    assert.equal(refused.status, 429);
    assert.ok(waitedMs >= 290, `it waited maxWaitMs first (${waitedMs} ms)`);
    const retryAfterMs = Number(refused.headers.get('retry-after-ms'));
    assert.ok(retryAfterMs > 0 && retryAfterMs <= admissionWindowMs(WINDOW_MS), `retry-after-ms ${retryAfterMs}`);
    assert.equal(refused.headers.get('retry-after'), String(Math.ceil(retryAfterMs / 1000)));
    assert.match(((await refused.json()) as { error: { message: string } }).error.message, /token or request budget/);
    assert.equal(sim.stats('a').received, 3, 'the waiting request never reached the deployment');
  });

  test('a client over its rpm quota gets 429; admitted requests count down its remaining requests', async () => {
    const client = `counted-${randomUUID().slice(0, 8)}`;
    const clients = [{ name: client, apiKey: 'counted-client-key', rpm: 3 }];
    const { name, g } = await gateway({ deployments: withEndpoint([{ id: 'spill', tpm: 100_000, rpm: 6000 }]) }, { clients });
    const responses: Response[] = [];
    let refusedBody = '';
    for (let i = 0; i < 4; i++) {
      const response = await chat(g.url, name, { key: 'counted-client-key' });
      refusedBody = await response.text();
      responses.push(response);
    }
    assert.deepEqual(
      responses.map((r) => r.status),
      [200, 200, 200, 429],
    );
    assert.deepEqual(
      responses.slice(0, 3).map((r) => r.headers.get('x-ratelimit-remaining-requests')),
      ['2', '1', '0'],
    );
    assert.equal(responses[0]?.headers.get('x-ratelimit-remaining-tokens'), null, 'no token quota, no token figure');
    const refused = responses[3]!;
    assert.equal(refused.headers.get('x-ratelimit-remaining-requests'), '0');
    const retryAfterMs = Number(refused.headers.get('retry-after-ms'));
    assert.ok(retryAfterMs > 0 && retryAfterMs <= admissionWindowMs(WINDOW_MS), `retry-after-ms ${retryAfterMs}: within the scaled window`);
    assert.equal(refused.headers.get('retry-after'), String(Math.ceil(retryAfterMs / 1000)));
    assert.match(
      (JSON.parse(refusedBody) as { error: { message: string } }).error.message,
      new RegExp(`${client} has exceeded its request rate limit`),
    );
    assert.equal(sim.stats('spill').received, 3, 'the refused request reached no deployment');
  });
});
