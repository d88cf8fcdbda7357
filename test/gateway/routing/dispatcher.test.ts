import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import { ClientAuth } from '../../../gateway/http/auth.ts';
import { prepareRequest } from '../../../gateway/http/prepare-request.ts';
import { matchProxiedRoute } from '../../../gateway/http/proxied-route.ts';
import { assignRequestId } from '../../../gateway/http/request-id.ts';
import { Metrics } from '../../../gateway/metrics.ts';
import { buildPools, ResourceDirectory, type Pool } from '../../../gateway/pools.ts';
import { createRouting } from '../../../gateway/routing/assemble.ts';
import { admissionWindowMs } from '../../../gateway/routing/window.ts';
import type { Simulator } from '../../../shared/simulator/index.ts';
import { createStore, type DeploymentSnapshot, type Store } from '../../../shared/store/index.ts';
import { chat, simulator, sleep, uniquePool, until } from '../../helpers/fixtures.ts';
import { CLIENT_KEY, UPSTREAM_KEY, testConfig, type DeploymentInput } from '../../helpers/gateway.ts';
import { serve, type LocalServer } from '../../helpers/local-http.ts';
import { memoryLogger, type LogLine } from '../../helpers/collaborators.ts';

const IDS = ['d1', 'd2', 'd3'];

/** The one line a request ends with, as the dispatcher logs it. */
interface RequestLine {
  message: string;
  requestId: string;
  client: string;
  pool: string;
  deployment?: string;
  attempts: number;
  status: number;
  outcome: string;
  stream: boolean;
  latencyMs: number;
  promptTokens?: number;
}

interface Harness {
  url: string;
  pool: Pool;
  store: Store;
  metrics: Metrics;
  /** Every log line so far, parsed. */
  logs: LogLine[];
  logText(): string;
  /** Waits for `count` request lines: each is written once its request is over, leases released. */
  requestLines(count: number): Promise<RequestLine[]>;
  snapshot(): Promise<Record<string, DeploymentSnapshot>>;
  close(): Promise<void>;
}

interface HarnessInput {
  deployments: DeploymentInput[];
  pool?: Record<string, unknown>;
  gateway?: Record<string, unknown>;
  clients?: { name: string; apiKey: string; tpm?: number; rpm?: number }[];
  /** Wraps the store the dispatcher gets (to watch its calls). */
  wrapStore?: (store: Store) => Store;
}

/** A store whose every call is recorded as it is made and as it settles, in order. */
function recordingStore(store: Store, events: string[]): Store {
  return new Proxy(store, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      if (typeof value !== 'function' || typeof property !== 'string') return value;
      return (...args: unknown[]) => {
        events.push(`call ${property}`);
        const result = (value as (...a: unknown[]) => unknown).apply(target, args);
        if (result instanceof Promise) void result.finally(() => events.push(`done ${property}`)).catch(() => {});
        return result;
      };
    },
  });
}

for (const storeKind of ['redis', 'memory'] as const) {
  describe(`Dispatcher, on the ${storeKind} store, in front of the simulator`, () => {
    let sim: Simulator;
    const open: Harness[] = [];
    before(async () => {
      sim = await simulator([
        ...IDS,
        { name: 'ptu', ptu: { tokensPerMinute: 100_000 } },
        // Budgets of its own, which other clients of the deployment use up behind the gateway's back.
        { name: 'shared', tpm: 1000, rpm: 600 },
      ]);
    });
    afterEach(async () => {
      await Promise.all(open.splice(0).map((h) => h.close()));
      sim.reset();
    });
    after(() => sim.close());

    /**
     * The dispatcher with its real collaborators, as app.ts assembles it, behind a bare node:http
     * server that prepares each request and hands it to `dispatcher.handle`. One pool, its own name.
     */
    async function harness(input: HarnessInput): Promise<Harness> {
      const name = uniquePool();
      const config = testConfig({
        pools: { [name]: { ...input.pool, deployments: input.deployments } },
        gateway: input.gateway,
        clients: input.clients,
      });
      const settings = config.gateway;
      const pools = buildPools(config);
      const pool = pools.get(name)!;
      const windowMs = admissionWindowMs(settings.windowMs);
      const created = createStore({ redisUrl: storeKind === 'redis' ? process.env.REDIS_URL : undefined, windowMs });
      const store = input.wrapStore ? input.wrapStore(created) : created;
      if (storeKind === 'redis') assert.ok(process.env.REDIS_URL, 'the global setup provides a Redis');

      const { logger, lines: logs } = memoryLogger();
      const metrics = new Metrics(false);
      const routing = createRouting(store, settings, metrics, logger);
      const { dispatcher } = routing;
      const auth = new ClientAuth(config.clients);
      const server: LocalServer = await serve((req, res) => {
        const route = matchProxiedRoute(req.method, req.url);
        if (!route || route === 'bad-path') return void res.writeHead(404).end();
        void (async () => {
          const request = await prepareRequest(req, res, route, assignRequestId(req, res), {
            settings,
            auth,
            pools,
            resources: new ResourceDirectory(pools),
          });
          if (request) await dispatcher.handle(req, res, request);
        })().catch(() => res.destroy());
      });

      const h: Harness = {
        url: server.url,
        pool,
        store,
        metrics,
        logs,
        logText: () => logs.map((line) => JSON.stringify(line)).join('\n'),
        async requestLines(count) {
          const lines = () => logs.filter((l) => l.message === 'request') as unknown as RequestLine[];
          await until(() => lines().length >= count, 3000, `${count} request log line(s)`);
          assert.equal(lines().length, count, 'one line per request, no more');
          return lines();
        },
        async snapshot() {
          return Object.fromEntries((await store.snapshot(pool.layout)).map((d) => [d.id, d]));
        },
        async close() {
          await server.close();
          await routing.close();
          await store.close();
        },
      };
      open.push(h);
      return h;
    }

    /** d1, d2, d3 in priority tiers 1, 2, 3: the order of attempts is known. */
    const tiered = (ids = IDS): DeploymentInput[] => ids.map((id, index) => ({ id, endpoint: sim.url, priority: index + 1 }));
    const received = (ids = IDS) => Object.fromEntries(ids.map((id) => [id, sim.stats(id).received]));

    /** No attempt left a lease behind, whatever the path out of the loop. */
    async function assertNoLeaseInFlight(h: Harness): Promise<void> {
      // Leases granted by the local fallback would not show in the store's snapshot: it must not have been used.
      assert.ok(!h.logs.some((l) => String(l.message).startsWith('store unavailable')), 'the store answered every acquire');
      const snapshot = await h.snapshot();
      assert.deepEqual(
        Object.fromEntries(Object.values(snapshot).map((d) => [d.id, d.inFlight])),
        Object.fromEntries(h.pool.layout.deployments.map((d) => [d.id, 0])),
        'no lease in flight',
      );
    }

    /** Keys, the client's or a deployment's, never reach a log line. */
    function assertNoKeyLogged(h: Harness, ...keys: string[]): void {
      const text = h.logText();
      for (const key of [CLIENT_KEY, UPSTREAM_KEY, ...keys]) assert.ok(!text.includes(key), 'a key appears in the logs');
    }

    test('success on the first try', async () => {
      const h = await harness({ deployments: tiered() });
      const response = await chat(h.url, h.pool.name, { headers: { 'x-request-id': 'trace-1' } });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-gateway-deployment'), 'd1');
      assert.equal(response.headers.get('x-gateway-attempts'), '1');
      assert.equal(response.headers.get('x-request-id'), 'trace-1');
      assert.equal(((await response.json()) as { object: string }).object, 'chat.completion');
      assert.deepEqual(received(), { d1: 1, d2: 0, d3: 0 });
      const [upstream] = sim.recentRequests('d1');
      assert.deepEqual(
        [upstream?.path, upstream?.apiVersion, upstream?.auth, upstream?.clientRequestId, upstream?.status],
        ['/openai/deployments/d1/chat/completions', '2024-10-21', 'api-key', 'trace-1', 200],
      );
      const [line] = await h.requestLines(1);
      assert.equal(line?.requestId, 'trace-1');
      assert.equal(line.outcome, 'ok');
      assert.equal(line.status, 200);
      assert.equal(line.attempts, 1);
      assert.equal(line.deployment, 'd1');
      assert.equal(line.pool, h.pool.name);
      assert.equal(line.client, 'tests');
      assert.equal(line.stream, false);
      assert.equal(line.promptTokens, 9, "the deployment's usage was read");
      await assertNoLeaseInFlight(h);
      assertNoKeyLogged(h);
    });

    test('a 429 fails over to another deployment and cools the throttled one down', async () => {
      const h = await harness({ deployments: tiered(['d1', 'd2']) });
      sim.setFault('d1', { fault: { kind: 'storm-429', retryAfterMs: 5000 }, count: 1 });
      const response = await chat(h.url, h.pool.name);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-gateway-deployment'), 'd2');
      assert.equal(response.headers.get('x-gateway-attempts'), '2');
      assert.equal(((await response.json()) as { object: string }).object, 'chat.completion', 'the 429 never reached the client');
      assert.equal(sim.stats('d1').throttled, 1);
      assert.equal(sim.stats('d2').served, 1);
      const [line] = await h.requestLines(1);
      assert.deepEqual([line?.outcome, line?.status, line?.attempts, line?.deployment], ['ok', 200, 2, 'd2']);
      const { d1 } = await h.snapshot();
      const cooling = d1!.cooldownUntil - Date.now();
      assert.ok(cooling > 3000 && cooling <= 5100, `d1 cools down for its retry-after (${cooling} ms left)`);
      await assertNoLeaseInFlight(h);
      assertNoKeyLogged(h);
    });

    test('a 500 fails over, and the failed deployment is not tried again although it is preferred', async () => {
      const h = await harness({ deployments: tiered(['d1', 'd2']) });
      sim.setFault('d1', { fault: { kind: 'status', status: 500 } });
      const response = await chat(h.url, h.pool.name);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-gateway-deployment'), 'd2');
      assert.equal(response.headers.get('x-gateway-attempts'), '2');
      // d1 is the best tier and not cooling down: only its exclusion keeps a second attempt away from it.
      assert.deepEqual(received(['d1', 'd2']), { d1: 1, d2: 1 });
      const { d1 } = await h.snapshot();
      assert.equal(d1?.cooldownUntil, 0, 'a 500 is no cooldown');
      const [line] = await h.requestLines(1);
      assert.deepEqual([line?.outcome, line?.status, line?.attempts, line?.deployment], ['ok', 200, 2, 'd2']);
      await assertNoLeaseInFlight(h);
      assertNoKeyLogged(h);
    });

    test('when every deployment answers 429 the client gets 429 with the soonest retry time', async () => {
      const h = await harness({ deployments: tiered(['d1', 'd2']) });
      sim.setFault('d1', { fault: { kind: 'storm-429', retryAfterMs: 3000 } });
      sim.setFault('d2', { fault: { kind: 'storm-429', retryAfterMs: 1500 } });
      const response = await chat(h.url, h.pool.name);
      assert.equal(response.status, 429);
      assert.equal(response.headers.get('x-gateway-attempts'), '2');
      assert.equal(response.headers.get('retry-after'), '2');
      const retryAfterMs = Number(response.headers.get('retry-after-ms'));
      assert.ok(retryAfterMs > 1000 && retryAfterMs <= 1500, `retry-after-ms ${retryAfterMs} is d2's`);
      const body = (await response.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, '429');
      assert.match(body.error.message, new RegExp(`${h.pool.name}.*retry after 2 seconds`));
      assert.deepEqual([sim.stats('d1').throttled, sim.stats('d2').throttled], [1, 1]);
      const [line] = await h.requestLines(1);
      assert.deepEqual([line?.outcome, line?.status, line?.attempts], ['saturated', 429, 2]);
      await assertNoLeaseInFlight(h);
      assertNoKeyLogged(h);
    });

    test("a 400 is the client's: passed through untouched, no failover", async () => {
      const h = await harness({ deployments: tiered(['d1', 'd2']) });
      // stream_options without stream: the simulator refuses it as Azure does.
      const response = await chat(h.url, h.pool.name, { body: { stream_options: { include_usage: true } } });
      assert.equal(response.status, 400);
      assert.equal(response.headers.get('x-gateway-attempts'), '1');
      assert.equal(response.headers.get('x-gateway-deployment'), 'd1');
      assert.ok(response.headers.get('apim-request-id'), "the deployment's own headers came along");
      assert.deepEqual(await response.json(), {
        error: {
          message: "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
          type: 'invalid_request_error',
          param: 'stream_options',
          code: null,
        },
      });
      assert.deepEqual(received(['d1', 'd2']), { d1: 1, d2: 0 });
      assert.equal(sim.recentRequests('d1')[0]?.status, 400);
      const [line] = await h.requestLines(1);
      assert.deepEqual([line?.status, line?.attempts, line?.deployment], [400, 1, 'd1']);
      await assertNoLeaseInFlight(h);
    });

    test("a 404 about the request is the client's; a 404 DeploymentNotFound is ours and fails over", async () => {
      const h = await harness({
        deployments: [
          { id: 'gone', endpoint: sim.url, deployment: 'no-such-deployment', priority: 1 },
          { id: 'd2', endpoint: sim.url, priority: 2 },
        ],
      });
      const response = await chat(h.url, h.pool.name);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-gateway-deployment'), 'd2');
      assert.equal(response.headers.get('x-gateway-attempts'), '2');
      assert.equal(sim.stats('d2').served, 1);
      const { gone } = await h.snapshot();
      const cooling = gone!.cooldownUntil - Date.now();
      assert.ok(cooling > 50_000 && cooling <= 60_100, `the misconfigured deployment is out for a minute (${cooling} ms)`);
      assert.ok(h.logs.some((l) => l.level === 'error' && String(l.message).includes('deployment not found upstream')));

      // An api-version Azure does not know: its 404 goes to the client as it came, and nobody else is tried.
      sim.resetStats();
      const bad = await fetch(`${h.url}/openai/deployments/${h.pool.name}/chat/completions?api-version=not-a-version`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'api-key': CLIENT_KEY },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 5 }),
        signal: AbortSignal.timeout(5000),
      });
      assert.equal(bad.status, 404);
      // The simulator counts no request it could not route, so the one attempt shows in the header alone.
      assert.equal(bad.headers.get('x-gateway-attempts'), '1');
      assert.equal(bad.headers.get('x-gateway-deployment'), 'd2');
      assert.deepEqual(await bad.json(), { error: { code: '404', message: 'Resource not found' } }, "the simulator's own body");
      const lines = await h.requestLines(2);
      assert.deepEqual([lines[0]?.outcome, lines[0]?.status, lines[0]?.attempts], ['ok', 200, 2]);
      assert.deepEqual([lines[1]?.outcome, lines[1]?.status, lines[1]?.attempts], ['upstream-error', 404, 1]);
      await assertNoLeaseInFlight(h);
      assertNoKeyLogged(h);
    });

    test('a connection reset and a hung deployment fail over; the hung request is closed', async () => {
      const h = await harness({ deployments: tiered(), gateway: { upstreamTimeoutMs: 300 } });
      sim.setFault('d1', { fault: { kind: 'reset' } });
      sim.setFault('d2', { fault: { kind: 'hang' } });
      const response = await chat(h.url, h.pool.name);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-gateway-deployment'), 'd3');
      assert.equal(response.headers.get('x-gateway-attempts'), '3');
      assert.deepEqual(received(), { d1: 1, d2: 1, d3: 1 });
      await until(() => sim.stats('d2').aborted === 1, 2000, 'the simulator to see the hung request closed');
      const lines = await h.requestLines(1);
      assert.deepEqual([lines[0]?.outcome, lines[0]?.status, lines[0]?.attempts, lines[0]?.deployment], ['ok', 200, 3, 'd3']);
      const failures = h.logs.filter((l) => l.message === 'upstream attempt failed');
      assert.deepEqual(
        failures.map((l) => [l.deployment, l.error]),
        [
          ['d1', 'ECONNRESET'],
          ['d2', 'timeout'],
        ],
      );
      await assertNoLeaseInFlight(h);
      assertNoKeyLogged(h);
    });

    test('a client leaving while the upstream is slow aborts the upstream request and releases the lease', async () => {
      const h = await harness({ deployments: tiered(['d1', 'd2']) });
      sim.setFault('d1', { fault: { kind: 'slow-first-byte', delayMs: 5000 } });
      const controller = new AbortController();
      const pending = chat(h.url, h.pool.name, { signal: controller.signal }).catch((error: Error) => error);
      await until(() => sim.stats('d1').inFlight === 1, 2000, 'the request to reach d1');
      assert.equal((await h.snapshot()).d1?.inFlight, 1, 'the attempt holds its lease');
      controller.abort();
      assert.ok((await pending) instanceof Error);
      await until(() => sim.stats('d1').aborted === 1, 2000, 'the simulator to see the abort');
      const [line] = await h.requestLines(1);
      assert.deepEqual([line?.outcome, line?.attempts, line?.deployment], ['client-closed', 1, 'd1']);
      assert.ok(line!.latencyMs < 4000, 'not held until the slow answer');
      assert.equal(sim.stats('d2').received, 0, 'no failover for a client that left');
      assert.ok(!h.logs.some((l) => l.message === 'upstream attempt failed'), 'the deployment is not blamed for the client leaving');
      await assertNoLeaseInFlight(h);
    });

    test('maxAttempts bounds the tries; the last error is relayed', async () => {
      const h = await harness({ deployments: tiered(), gateway: { maxAttempts: 2 } });
      for (const id of IDS) sim.setFault(id, { fault: { kind: 'status', status: 500 } });
      const response = await chat(h.url, h.pool.name);
      assert.equal(response.status, 500);
      assert.equal(response.headers.get('x-gateway-attempts'), '2');
      assert.equal(response.headers.get('x-gateway-deployment'), 'd2');
      assert.equal(((await response.json()) as { error: { type: string } }).error.type, 'server_error');
      assert.deepEqual(received(), { d1: 1, d2: 1, d3: 0 });
      const [line] = await h.requestLines(1);
      assert.deepEqual([line?.outcome, line?.status, line?.attempts, line?.deployment], ['upstream-error', 500, 2, 'd2']);
      await assertNoLeaseInFlight(h);
      assertNoKeyLogged(h);
    });

    test('a pool with maxWaitMs waits for budget to free, then serves', async () => {
      // A 612 ms admission window, and a tpm that holds one request (estimate 9 prompt + 5 max_tokens = 14).
      const h = await harness({
        deployments: [{ id: 'd1', endpoint: sim.url, tpm: 20 }],
        pool: { maxWaitMs: 3000 },
        gateway: { windowMs: 600 },
      });
      assert.equal((await chat(h.url, h.pool.name)).status, 200);
      assert.ok((await h.snapshot()).d1!.tokensInWindow >= 14, 'the first request used the budget');
      const started = Date.now();
      const response = await chat(h.url, h.pool.name);
      const waitedMs = Date.now() - started;
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-gateway-attempts'), '1', 'waiting is not an attempt');
      assert.ok(waitedMs >= 150, `it waited for the window to move (${waitedMs} ms)`);
      assert.equal(sim.stats('d1').served, 2);
      const lines = await h.requestLines(2);
      assert.deepEqual([lines[1]?.outcome, lines[1]?.status, lines[1]?.attempts], ['ok', 200, 1]);
      await assertNoLeaseInFlight(h);
    });

    test('while a request may wait, a 429 is part of the wait and does not use up its only attempt', async () => {
      const h = await harness({
        deployments: [{ id: 'd1', endpoint: sim.url }],
        pool: { maxWaitMs: 3000 },
        gateway: { maxAttempts: 1 },
      });
      sim.setFault('d1', { fault: { kind: 'storm-429', retryAfterMs: 300 }, count: 1 });
      const response = await chat(h.url, h.pool.name);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-gateway-attempts'), '2');
      assert.deepEqual([sim.stats('d1').throttled, sim.stats('d1').served], [1, 1]);
      await h.requestLines(1);
      await assertNoLeaseInFlight(h);
    });

    test('a client over its quota gets 429 client-quota, and no deployment is reached', async () => {
      const client = { name: `client-${randomUUID().slice(0, 8)}`, apiKey: `quota-key-${randomUUID()}`, rpm: 1 };
      const h = await harness({ deployments: tiered(['d1', 'd2']), clients: [client] });
      const first = await chat(h.url, h.pool.name, { key: client.apiKey });
      assert.equal(first.status, 200);
      assert.equal(first.headers.get('x-ratelimit-remaining-requests'), '0');
      const refused = await chat(h.url, h.pool.name, { key: client.apiKey });
      assert.equal(refused.status, 429);
      assert.ok(Number(refused.headers.get('retry-after')) >= 1);
      assert.equal(refused.headers.get('x-ratelimit-remaining-requests'), '0');
      assert.equal(refused.headers.get('x-gateway-attempts'), null, 'no attempt was made');
      assert.match(((await refused.json()) as { error: { message: string } }).error.message, /exceeded its request rate limit/);
      assert.deepEqual(received(['d1', 'd2']), { d1: 1, d2: 0 }, 'only the admitted request reached a deployment');
      const lines = await h.requestLines(2);
      assert.deepEqual(
        [lines[1]?.outcome, lines[1]?.status, lines[1]?.attempts, lines[1]?.deployment, lines[1]?.client],
        ['client-quota', 429, 0, undefined, client.name],
      );
      await assertNoLeaseInFlight(h);
      assertNoKeyLogged(h, client.apiKey);
    });

    test('a quota check shares its round trip with the first acquire, and its settlement with the release', async () => {
      const client = { name: `client-${randomUUID().slice(0, 8)}`, apiKey: `quota-key-${randomUUID()}`, tpm: 100_000, rpm: 100 };
      const events: string[] = [];
      const h = await harness({ deployments: tiered(['d1']), clients: [client], wrapStore: (store) => recordingStore(store, events) });
      const response = await chat(h.url, h.pool.name, { key: client.apiKey });
      assert.equal(response.status, 200);
      await h.requestLines(1);
      const at = (event: string) => {
        const index = events.indexOf(event);
        assert.ok(index >= 0, `${event} in ${events.join(', ')}`);
        return index;
      };
      assert.ok(at('call acquire') < at('done acquireQuota'), `the acquire went out before the quota answered: ${events.join(', ')}`);
      // The estimate is not the usage, so the booking is corrected: sent before the release is answered.
      assert.ok(at('call releaseQuota') < at('done release'), `the settlement went out with the release: ${events.join(', ')}`);
      await assertNoLeaseInFlight(h);
    });

    test('a request its quota refuses leaves nothing booked on the deployment its acquire was granted', async () => {
      const client = { name: `client-${randomUUID().slice(0, 8)}`, apiKey: `quota-key-${randomUUID()}`, rpm: 1 };
      const h = await harness({ deployments: tiered(['d1']), clients: [client] });
      assert.equal((await chat(h.url, h.pool.name, { key: client.apiKey })).status, 200);
      const before = (await h.snapshot()).d1!;
      for (let i = 0; i < 3; i++) assert.equal((await chat(h.url, h.pool.name, { key: client.apiKey })).status, 429);
      await h.requestLines(4);
      const { d1 } = await h.snapshot();
      assert.deepEqual(
        [d1?.inFlight, d1?.tokensInWindow, d1?.requestsInWindow],
        [0, before.tokensInWindow, before.requestsInWindow],
        'the refused requests took neither tokens nor requests from the pool',
      );
      assert.deepEqual(received(['d1']), { d1: 1 });
    });

    test('a stream that did not ask for usage: usage is asked upstream, taken out of the stream, and logged', async () => {
      const h = await harness({ deployments: tiered(['d1']) });
      const response = await chat(h.url, h.pool.name, { stream: true });
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
      const text = await response.text();
      assert.ok(text.endsWith('data: [DONE]\n\n'), 'the stream ended whole');
      assert.ok(text.includes('"delta":{"content":'), 'tokens came through');
      assert.ok(!text.includes('"usage"'), 'no usage chunk and no usage:null: what the client asked for');
      const [line] = await h.requestLines(1);
      assert.deepEqual([line?.outcome, line?.stream, line?.promptTokens], ['ok', true, 9], 'the usage chunk was read on the way');

      // A client that asked for usage gets it, as upstream sent it.
      const asked = await chat(h.url, h.pool.name, { stream: true, body: { stream_options: { include_usage: true } } });
      assert.match(await asked.text(), /"choices":\[\].*"usage":\{"completion_tokens":5,/);
      await h.requestLines(2);
      await assertNoLeaseInFlight(h);
    });

    test('a stream keeps its lease, booking and in-flight count until it ends, and settles them then', async () => {
      const client = { name: `client-${randomUUID().slice(0, 8)}`, apiKey: `quota-key-${randomUUID()}`, tpm: 100_000 };
      const events: string[] = [];
      const h = await harness({ deployments: tiered(['d1']), clients: [client], wrapStore: (store) => recordingStore(store, events) });
      const inFlight = async () => (await h.metrics.inFlight.get()).values[0]?.value;
      // The stream stops after its first chunks for a while: the request is mid-answer meanwhile.
      sim.setFault('d1', { fault: { kind: 'stall-mid-stream', afterChunks: 2, stallMs: 700 }, count: 1 });
      const response = await chat(h.url, h.pool.name, { stream: true, key: client.apiKey });
      assert.equal(response.status, 200);
      const reader = response.body!.getReader();
      const first = await reader.read();
      assert.ok(!first.done && first.value.length > 0, 'the first chunk came');
      await sleep(300);
      assert.ok(
        !events.includes('call release') && !events.includes('call releaseQuota'),
        `nothing settled mid-stream: ${events.join(', ')}`,
      );
      assert.equal(await inFlight(), 1, 'counted in flight mid-stream');
      assert.equal((await h.snapshot()).d1?.inFlight, 1, 'its lease held mid-stream');
      assert.equal(h.logs.filter((l) => l.message === 'request').length, 0, 'no log line before the end');
      const settledBefore = events.length;
      while (!(await reader.read()).done);
      const [line] = await h.requestLines(1);
      assert.equal(line?.outcome, 'ok');
      const after = events.slice(settledBefore);
      assert.ok(after.includes('done release') && after.includes('done releaseQuota'), `settled after the end: ${after.join(', ')}`);
      assert.equal(await inFlight(), 0, 'out of the in-flight count once logged');
      await assertNoLeaseInFlight(h);
    });

    test('a served attempt is charged on release: PTU its real usage, Standard its arrival estimate', async () => {
      // No max_tokens: the estimate assumes the pool's defaultMaxTokens (9 + 1024); the simulator generates 20.
      const body = { max_tokens: undefined };
      const ptu = await harness({ deployments: [{ id: 'ptu', endpoint: sim.url }] });
      assert.equal((await chat(ptu.url, ptu.pool.name, { body })).status, 200);
      await ptu.requestLines(1);
      assert.equal((await ptu.snapshot()).ptu?.tokensInWindow, 29, 'corrected to the usage');
      const standard = await harness({ deployments: [{ id: 'd1', endpoint: sim.url }] });
      assert.equal((await chat(standard.url, standard.pool.name, { body })).status, 200);
      await standard.requestLines(1);
      assert.equal((await standard.snapshot()).d1?.tokensInWindow, 1033, 'Azure charged the estimate on arrival');
      await assertNoLeaseInFlight(ptu);
      await assertNoLeaseInFlight(standard);
    });

    test("a deployment's 429 teaches the gateway the usage it did not see, then fails over", async () => {
      // Another client of the deployment uses 900 of its 1000 tokens, directly.
      const direct = await fetch(`${sim.url}/openai/deployments/shared/chat/completions?api-version=2024-10-21`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'api-key': UPSTREAM_KEY },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 900 }),
        signal: AbortSignal.timeout(5000),
      });
      assert.equal(direct.status, 200);
      await direct.arrayBuffer();
      const h = await harness({
        deployments: [
          { id: 'shared', endpoint: sim.url, tpm: 1000, rpm: 600, priority: 1 },
          { id: 'd2', endpoint: sim.url, priority: 2 },
        ],
      });
      // 209 tokens fit the gateway's own view of the window (empty), not the deployment's.
      const response = await chat(h.url, h.pool.name, { body: { max_tokens: 200 } });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-gateway-deployment'), 'd2');
      assert.equal(sim.stats('shared').throttled, 1);
      await h.requestLines(1);
      const { shared } = await h.snapshot();
      assert.ok(shared!.tokensInWindow >= 850, `the window holds what the deployment reported used (${shared!.tokensInWindow})`);
      await assertNoLeaseInFlight(h);
    });

    test('an answer that breaks off mid-stream is its own outcome: in the log line, the attempt, the request metric', async () => {
      const h = await harness({ deployments: tiered(['d1', 'd2']) });
      sim.setFault('d1', { fault: { kind: 'reset-mid-stream', afterChunks: 3 }, count: 1 });
      const response = await chat(h.url, h.pool.name, { stream: true });
      assert.equal(response.status, 200, 'the head had gone out: no failover');
      assert.equal(response.headers.get('x-gateway-deployment'), 'd1');
      assert.equal(await response.text().catch(() => 'cut'), 'cut', 'the client saw the stream cut');
      assert.deepEqual([sim.stats('d1').failed, sim.stats('d2').received], [1, 0]);
      const [line] = await h.requestLines(1);
      assert.deepEqual([line?.outcome, line?.status, line?.attempts, line?.deployment], ['upstream-broke', 200, 1, 'd1']);
      const warn = h.logs.find((l) => l.message === 'upstream answer broke off');
      assert.deepEqual([warn?.level, warn?.deployment, warn?.requestId], ['warn', 'd1', line?.requestId]);
      const value = async (metric: Metrics['requests'] | Metrics['attempts'], labels: Record<string, string>) =>
        (await metric.get()).values.find((v) => Object.entries(labels).every(([k, x]) => (v.labels as Record<string, unknown>)[k] === x))
          ?.value;
      assert.equal(await value(h.metrics.requests, { pool: h.pool.name, status: '200', outcome: 'upstream-broke' }), 1);
      assert.equal(await value(h.metrics.requests, { pool: h.pool.name, status: '200', outcome: 'ok' }), undefined, 'not a plain 200');
      assert.equal(await value(h.metrics.attempts, { deployment: 'd1', outcome: 'upstream-broke' }), 1);
      assert.equal(await value(h.metrics.attempts, { deployment: 'd1', outcome: '200' }), undefined);
      await assertNoLeaseInFlight(h);
      assertNoKeyLogged(h);
    });

    test('a pool whose every circuit is open by ejections alone is not refused: one deployment is put back', async () => {
      const h = await harness({ deployments: tiered() });
      // As two instances leave it when each ejects one of the last two at the same moment.
      for (const [index, id] of IDS.entries()) await h.store.openCircuit(h.pool.name, id, 20_000 + index * 1000);
      const response = await chat(h.url, h.pool.name);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-gateway-deployment'), 'd1', 'the one that would reopen soonest');
      assert.equal(((await response.json()) as { object: string }).object, 'chat.completion');
      assert.deepEqual(received(), { d1: 1, d2: 0, d3: 0 });
      assert.deepEqual(
        Object.values(await h.snapshot()).map((d) => d.circuit),
        ['closed', 'open', 'open'],
      );
      assert.ok(h.logs.some((l) => l.level === 'warn' && String(l.message).startsWith('no deployment of the pool in rotation')));
      // A 429's cooldown is the deployments' own word: then the pool's answer is a 429, nothing is put back.
      await h.store.openCircuit(h.pool.name, 'd1', 20_000);
      await h.store.cooldown(h.pool.name, 'd2', 5000);
      const refused = await chat(h.url, h.pool.name);
      assert.equal(refused.status, 429);
      assert.deepEqual(received(), { d1: 1, d2: 0, d3: 0 });
      await h.requestLines(2);
      await assertNoLeaseInFlight(h);
    });

    test('one JSON line per request, whatever happened', async () => {
      const h = await harness({ deployments: tiered(['d1', 'd2']) });
      sim.setFault('d1', { fault: { kind: 'status', status: 503 }, count: 1 });
      const statuses = [];
      for (let i = 0; i < 3; i++) statuses.push((await chat(h.url, h.pool.name)).status);
      assert.deepEqual(statuses, [200, 200, 200]);
      const lines = await h.requestLines(3);
      assert.equal(lines.length, 3);
      assert.equal(new Set(lines.map((l) => l.requestId)).size, 3, 'one line each');
      assert.deepEqual(
        lines.map((l) => [l.attempts, l.deployment]),
        [
          [2, 'd2'],
          [1, 'd1'],
          [1, 'd1'],
        ],
      );
      await assertNoLeaseInFlight(h);
      assertNoKeyLogged(h);
    });
  });
}
