/**
 * The metrics an operator acts on, read from a real gateway's /metrics in front of the simulator:
 * each deployment against its budget (filled from the store at scrape time), upstream latency and
 * time to first token, tokens by client, the gateway's own 429s by reason, the wait queue, estimated
 * vs charged tokens. Then the scrape-time gauges alone (a store that does not answer, pools swapped
 * by a reload), and the Grafana dashboard and the Prometheus config against a live gateway's output.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { parse } from 'yaml';
import { registerDeploymentGauges } from '../../gateway/deployment-gauges.ts';
import { buildPools, type Pool } from '../../gateway/pools.ts';
import type { Simulator } from '../../shared/simulator/index.ts';
import type { DeploymentSnapshot, PoolLayout } from '../../shared/store/types.ts';
import { chat, simulator, sleep, uniquePool, until } from '../helpers/fixtures.ts';
import { CLIENT_KEY, spawnGateway, startGateway, testConfig, type RunningGateway } from '../helpers/gateway.ts';
import { matching, metricValue, parseExposition, scrape, value } from '../helpers/metrics.ts';

interface ChatBody {
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

const METERED_KEY = 'metered-client-key';

describe('metrics of a gateway in front of the simulator', () => {
  let sim: Simulator;
  const running: RunningGateway[] = [];
  before(async () => {
    sim = await simulator([
      { name: 'a', model: 'gpt-4o', tpm: 10_000_000, completionTokens: 10 },
      { name: 'b', model: 'gpt-4o', tpm: 10_000_000, completionTokens: 10 },
      { name: 'slow', tpm: 10_000_000, completionTokens: 10, latency: { ttftMs: 200, perTokenMs: 30 } },
      { name: 'ptu', ptu: { tokensPerMinute: 10_000_000 }, completionTokens: 10 },
    ]);
  });
  afterEach(() => sim.reset());
  after(async () => {
    await Promise.all(running.map((g) => g.close()));
    await sim.close();
  });

  /** One gateway with one pool over simulator deployments (`deployment` names the simulator's). */
  async function gateway(
    deployments: { id: string; deployment?: string; tpm?: number; rpm?: number; model?: string }[],
    options: { pool?: Record<string, unknown>; gateway?: Record<string, unknown> } = {},
  ) {
    const name = uniquePool('metrics');
    const config = testConfig({
      pools: { [name]: { ...options.pool, deployments: deployments.map((d) => ({ endpoint: sim.url, ...d })) } },
      gateway: options.gateway,
      clients: [
        { name: 'tests', apiKey: CLIENT_KEY },
        // Quotas are per client name across the store: a name of its own per gateway.
        { name: `metered-${name}`, apiKey: METERED_KEY, rpm: 1 },
      ],
    });
    const g = await startGateway(config);
    running.push(g);
    const pool = buildPools(config).get(name)!;
    return { name, g, layout: pool.layout };
  }

  test('each deployment against its budget, from the store at scrape time: window usage, in flight, cooldown, circuit, drained', async () => {
    const { name, g, layout } = await gateway([
      { id: 'a', tpm: 5000, rpm: 600 },
      { id: 'b', tpm: 8000, rpm: 900 },
      { id: 'slow', tpm: 100_000 },
    ]);
    const of = (deployment: string) => ({ pool: name, deployment });
    let metrics = await scrape(g.url);
    assert.deepEqual(
      [value(metrics, 'spillway_deployment_tpm', of('a')), value(metrics, 'spillway_deployment_rpm', of('b'))],
      [5000, 900],
      'the configured budgets',
    );
    assert.equal(matching(metrics, 'spillway_deployment_rpm', of('slow')).length, 0, 'no rpm configured: no series');
    assert.equal(value(metrics, 'spillway_pool_snapshot_ok', { pool: name }), 1);
    for (const id of ['a', 'b', 'slow']) {
      assert.equal(value(metrics, 'spillway_deployment_tokens_in_window', of(id)), 0);
      assert.equal(value(metrics, 'spillway_deployment_requests_in_window', of(id)), 0);
      assert.equal(value(metrics, 'spillway_deployment_circuit', { ...of(id), state: 'closed' }), 1);
      assert.equal(value(metrics, 'spillway_deployment_circuit', { ...of(id), state: 'open' }), 0);
      assert.equal(value(metrics, 'spillway_deployment_drained', of(id)), 0);
      assert.equal(value(metrics, 'spillway_deployment_cooldown_seconds', of(id)), 0);
    }

    // Traffic on a and b only (slow drained first), then the gauges say what the store says.
    await g.store.drain(name, 'slow');
    for (let i = 0; i < 6; i++) assert.equal((await chat(g.url, name, { body: { max_tokens: 50 } })).status, 200);
    metrics = await scrape(g.url);
    const store = new Map((await g.store.snapshot(layout)).map((d) => [d.id, d]));
    for (const id of ['a', 'b']) {
      const tokens = value(metrics, 'spillway_deployment_tokens_in_window', of(id));
      assert.equal(tokens, store.get(id)!.tokensInWindow, `${id}: tokens in window as the store has them`);
      assert.equal(value(metrics, 'spillway_deployment_requests_in_window', of(id)), store.get(id)!.requestsInWindow);
    }
    assert.equal(
      value(metrics, 'spillway_deployment_requests_in_window', of('a')) + value(metrics, 'spillway_deployment_requests_in_window', of('b')),
      6,
    );
    assert.ok(value(metrics, 'spillway_deployment_tokens_in_window', of('a')) >= 50, 'a served some: at least one reservation');
    assert.equal(value(metrics, 'spillway_deployment_drained', of('slow')), 1);

    // In flight: a slow answer (200 ms to its first token, 30 ms a token) is on its lease while it lasts.
    await g.store.enable(name, 'slow');
    await g.store.drain(name, 'a');
    await g.store.drain(name, 'b');
    const slow = chat(g.url, name);
    await until(async () => (await metricValue(g.url, 'spillway_deployment_in_flight', of('slow'))) === 1, 3000, 'slow in flight');
    assert.equal((await slow).status, 200);
    assert.equal(await metricValue(g.url, 'spillway_deployment_in_flight', of('slow')), 0, 'released after the answer');

    // A cooldown and an open circuit, as published to the store by any instance.
    await g.store.cooldown(name, 'a', 20_000);
    await g.store.openCircuit(name, 'b', 10_000);
    metrics = await scrape(g.url);
    const cooldown = value(metrics, 'spillway_deployment_cooldown_seconds', of('a'));
    assert.ok(cooldown > 18 && cooldown <= 20, `cooldown left ${cooldown} s`);
    assert.equal(value(metrics, 'spillway_deployment_circuit', { ...of('b'), state: 'open' }), 1);
    assert.equal(value(metrics, 'spillway_deployment_circuit', { ...of('b'), state: 'closed' }), 0);
    assert.equal(value(metrics, 'spillway_deployment_drained', of('a')), 1);
  });

  test('upstream latency to headers and time to first token per deployment; the stream label tells them apart', async () => {
    const { name, g } = await gateway([{ id: 'slow' }]);
    const started = performance.now();
    const streamed = await chat(g.url, name, { stream: true, body: { max_tokens: 10 } });
    assert.equal(streamed.status, 200);
    await streamed.text();
    const streamMs = performance.now() - started;
    const whole = await chat(g.url, name, { body: { max_tokens: 10 } });
    assert.equal(whole.status, 200);
    await whole.text();

    const metrics = await scrape(g.url);
    const labels = { pool: name, deployment: 'slow' };
    assert.equal(value(metrics, 'spillway_upstream_latency_seconds_count', labels), 2, 'one latency per attempt answered');
    assert.equal(value(metrics, 'spillway_upstream_ttft_seconds_count', { ...labels, stream: 'true' }), 1);
    assert.equal(value(metrics, 'spillway_upstream_ttft_seconds_count', { ...labels, stream: 'false' }), 1);
    const streamTtft = value(metrics, 'spillway_upstream_ttft_seconds_sum', { ...labels, stream: 'true' });
    const wholeTtft = value(metrics, 'spillway_upstream_ttft_seconds_sum', { ...labels, stream: 'false' });
    // The stream's first token comes after the deployment's 200 ms, long before its 10 tokens × 30 ms end.
    assert.ok(streamTtft >= 0.19 && streamTtft * 1000 < streamMs - 150, `stream TTFT ${streamTtft} s of a ${streamMs} ms stream`);
    assert.ok(wholeTtft >= streamTtft + 0.2, `a whole answer's first byte comes with its last token: ${wholeTtft} s`);
    assert.equal(value(metrics, 'spillway_upstream_ttft_seconds_bucket', { ...labels, stream: 'true', le: '0.1' }), 0);

    // Headers at once, the first token 300 ms later: the latency histogram ends at the headers, TTFT at the body.
    sim.setFault('slow', { fault: { kind: 'stall-mid-stream', afterChunks: 0, stallMs: 300 }, count: 1 });
    const stalled = await chat(g.url, name, { stream: true, body: { max_tokens: 10 } });
    assert.equal(stalled.status, 200);
    await stalled.text();
    const later = await scrape(g.url);
    const delta = (metric: string, extra: Record<string, string> = {}) =>
      value(later, metric, { ...labels, ...extra }) - value(metrics, metric, { ...labels, ...extra });
    const headersSeconds = delta('spillway_upstream_latency_seconds_sum');
    const firstTokenSeconds = delta('spillway_upstream_ttft_seconds_sum', { stream: 'true' });
    assert.ok(firstTokenSeconds - headersSeconds >= 0.25, `headers after ${headersSeconds} s, first token after ${firstTokenSeconds} s`);
  });

  test("the gateway's own 429s by reason: pool full, every deployment unavailable, client over quota; too large is a 400 apart", async () => {
    const { name, g } = await gateway([{ id: 'a', tpm: 1000, rpm: 600 }]);
    const reasons = async () => {
      const metrics = await scrape(g.url);
      return Object.fromEntries(
        matching(metrics, 'spillway_throttled_requests_total', { pool: name }).map((s) => [s.labels.reason!, s.value]),
      );
    };
    // Each reserves its prompt plus 300 tokens: three fit in 1000.
    for (let i = 0; i < 3; i++) assert.equal((await chat(g.url, name, { body: { max_tokens: 300 } })).status, 200);
    assert.equal((await chat(g.url, name, { body: { max_tokens: 300 } })).status, 429);
    assert.deepEqual(await reasons(), { 'pool-full': 1 });

    const tooLarge = await chat(g.url, name, { body: { max_tokens: 5000 } });
    assert.equal(tooLarge.status, 400);
    assert.equal(await metricValue(g.url, 'spillway_rejected_requests_total', { status: '400', code: 'TokensExceedBudget' }), 1);
    assert.deepEqual(await reasons(), { 'pool-full': 1 }, 'not a 429');

    // A client allowed one request a minute: its first is admitted by its quota (then finds the pool full), its second is not.
    assert.equal((await chat(g.url, name, { key: METERED_KEY, body: { max_tokens: 300 } })).status, 429);
    assert.equal((await chat(g.url, name, { key: METERED_KEY, body: { max_tokens: 300 } })).status, 429);
    assert.deepEqual(await reasons(), { 'pool-full': 2, 'client-quota': 1 });

    // Azure throttles the only deployment of another pool: it cools down, and the gateway says so.
    const other = await gateway([{ id: 'b' }]);
    sim.setFault('b', { fault: { kind: 'storm-429', retryAfterMs: 20_000 }, count: 1 });
    assert.equal((await chat(other.g.url, other.name)).status, 429);
    const metrics = await scrape(other.g.url);
    assert.equal(value(metrics, 'spillway_throttled_requests_total', { pool: other.name, reason: 'pool-unavailable' }), 1);
    assert.equal(value(metrics, 'spillway_upstream_attempts_total', { pool: other.name, outcome: '429' }), 1);
    assert.ok(value(metrics, 'spillway_deployment_cooldown_seconds', { pool: other.name, deployment: 'b' }) > 15);
  });

  test('a Responses follow-up whose resource is throttled: counted as pinned-owner', async () => {
    const { name, g } = await gateway([{ id: 'a', model: 'gpt-4o' }]);
    const create = (body: Record<string, unknown>) =>
      fetch(`${g.url}/openai/v1/responses`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'api-key': CLIENT_KEY },
        body: JSON.stringify({ model: name, input: 'Hello!', max_output_tokens: 20, ...body }),
        signal: AbortSignal.timeout(10_000),
      });
    const created = await create({});
    assert.equal(created.status, 200);
    const { id } = (await created.json()) as { id: string };
    sim.setFault('a', { fault: { kind: 'storm-429', retryAfterMs: 5000 } });
    const refused = await create({ previous_response_id: id });
    assert.equal(refused.status, 429);
    await refused.text();
    assert.equal(await metricValue(g.url, 'spillway_throttled_requests_total', { pool: name, reason: 'pinned-owner' }), 1);
    assert.equal(await metricValue(g.url, 'spillway_throttled_requests_total', { pool: name, reason: 'pool-unavailable' }), 0);
  });

  test('the wait queue: depth while a request waits for room, then how long it waited and how the wait ended', async () => {
    // A 1.2 s "minute": the filled window frees its room about 1.2 s later.
    const { name, g } = await gateway([{ id: 'a', tpm: 1000, rpm: 600 }], { pool: { maxWaitMs: 5000 }, gateway: { windowMs: 1200 } });
    for (let i = 0; i < 3; i++) assert.equal((await chat(g.url, name, { body: { max_tokens: 300 } })).status, 200);
    const waiting = chat(g.url, name, { body: { max_tokens: 300 } });
    await until(async () => (await metricValue(g.url, 'spillway_queue_waiting_requests', { pool: name })) === 1, 1000, 'one waiting');
    assert.equal((await waiting).status, 200);
    let metrics = await scrape(g.url);
    assert.equal(value(metrics, 'spillway_queue_waiting_requests', { pool: name }), 0);
    assert.equal(value(metrics, 'spillway_queue_wait_seconds_count', { pool: name, outcome: 'granted' }), 1);
    const waited = value(metrics, 'spillway_queue_wait_seconds_sum', { pool: name, outcome: 'granted' });
    assert.ok(waited > 0.3 && waited < 2, `waited ${waited} s for the window to free room`);

    // A wait that runs out: 429 after maxWaitMs.
    const short = await gateway([{ id: 'a', tpm: 1000, rpm: 600 }], { pool: { maxWaitMs: 300 }, gateway: { windowMs: 60_000 } });
    for (let i = 0; i < 3; i++) assert.equal((await chat(short.g.url, short.name, { body: { max_tokens: 300 } })).status, 200);
    assert.equal((await chat(short.g.url, short.name, { body: { max_tokens: 300 } })).status, 429);
    metrics = await scrape(short.g.url);
    assert.equal(value(metrics, 'spillway_queue_waiting_requests', { pool: short.name }), 0);
    assert.equal(value(metrics, 'spillway_queue_wait_seconds_count', { pool: short.name, outcome: 'timed-out' }), 1);
    assert.ok(value(metrics, 'spillway_queue_wait_seconds_sum', { pool: short.name, outcome: 'timed-out' }) >= 0.25);
    assert.equal(value(metrics, 'spillway_throttled_requests_total', { pool: short.name, reason: 'pool-full' }), 1);
  });

  test('estimated vs charged tokens: Standard keeps the estimate, PTU charges the usage; tokens by client', async () => {
    const standard = await gateway([{ id: 'a', tpm: 100_000 }]);
    const ptu = await gateway([{ id: 'ptu', tpm: 100_000 }]);
    const usages: ChatBody['usage'][] = [];
    for (const { g, name } of [standard, ptu]) {
      const response = await chat(g.url, name, { body: { max_tokens: 300 } });
      assert.equal(response.status, 200);
      usages.push(((await response.json()) as ChatBody).usage);
    }
    const [standardUsage, ptuUsage] = usages as [ChatBody['usage'], ChatBody['usage']];

    let metrics = await scrape(standard.g.url);
    const estimated = value(metrics, 'spillway_estimated_tokens_total', { pool: standard.name });
    assert.ok(estimated >= 300, `the estimate holds max_tokens: ${estimated}`);
    assert.ok(standardUsage.total_tokens < estimated, 'the usage was below the estimate');
    assert.equal(value(metrics, 'spillway_charged_tokens_total', { pool: standard.name }), estimated, 'Standard keeps the estimate');
    const byClient = { client: 'tests', pool: standard.name };
    assert.equal(value(metrics, 'spillway_client_tokens_total', { ...byClient, kind: 'prompt' }), standardUsage.prompt_tokens);
    assert.equal(value(metrics, 'spillway_client_tokens_total', { ...byClient, kind: 'completion' }), standardUsage.completion_tokens);

    metrics = await scrape(ptu.g.url);
    assert.equal(value(metrics, 'spillway_estimated_tokens_total', { pool: ptu.name }), estimated, 'the same request, the same estimate');
    assert.equal(value(metrics, 'spillway_charged_tokens_total', { pool: ptu.name }), ptuUsage.total_tokens, 'PTU charges the usage');

    // A client's tokens are its own.
    const metered = await chat(standard.g.url, standard.name, { key: METERED_KEY, body: { max_tokens: 5 } });
    assert.equal(metered.status, 200);
    const usage = ((await metered.json()) as ChatBody).usage;
    metrics = await scrape(standard.g.url);
    const meteredTokens = { client: `metered-${standard.name}`, pool: standard.name, kind: 'completion' };
    assert.equal(value(metrics, 'spillway_client_tokens_total', meteredTokens), usage.completion_tokens);
    assert.equal(value(metrics, 'spillway_client_tokens_total', { ...byClient, kind: 'completion' }), standardUsage.completion_tokens);
  });
});

// ---------------------------------------------------------------------------------------------

describe('deployment gauges at scrape time', () => {
  const poolsOf = (ids: string[], tpm = 1000) =>
    buildPools(
      testConfig({ pools: { p: { deployments: ids.map((id) => ({ id, endpoint: 'http://127.0.0.1:9', tpm, rpm: 60 })) } }, clients: null }),
    );
  const snapshotOf = (layout: PoolLayout): DeploymentSnapshot[] =>
    layout.deployments.map((d) => ({
      id: d.id,
      inFlight: 2,
      tokensInWindow: 300,
      requestsInWindow: 3,
      cooldownUntil: 0,
      circuit: 'closed',
      circuitOpenUntil: 0,
      drained: false,
      resetAt: 0,
      slowStartSince: 0,
    }));

  test('a store that does not answer: the scrape ends within its budget with what is known, and no second snapshot piles up', async () => {
    const registry = new Registry();
    const pools = poolsOf(['a', 'b']);
    let calls = 0;
    const never = new Promise<DeploymentSnapshot[]>(() => undefined);
    registerDeploymentGauges({ registry, pools: () => pools.values(), store: { snapshot: () => (calls++, never) }, budgetMs: 100 });
    for (let round = 0; round < 2; round++) {
      const started = performance.now();
      let timer: NodeJS.Timeout | undefined;
      const hung = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`scrape ${round} still waiting after 2 s`)), 2000);
      });
      const metrics = parseExposition(await Promise.race([registry.metrics(), hung]).finally(() => clearTimeout(timer)));
      const ms = performance.now() - started;
      assert.ok(ms < 400, `scrape ${round} took ${ms} ms`);
      assert.equal(value(metrics, 'spillway_pool_snapshot_ok', { pool: 'p' }), 0);
      assert.equal(value(metrics, 'spillway_deployment_tpm', { pool: 'p', deployment: 'b' }), 1000, 'the budgets are known');
      assert.equal(matching(metrics, 'spillway_deployment_tokens_in_window').length, 0, 'no stale or invented figure');
      assert.equal(matching(metrics, 'spillway_deployment_circuit').length, 0);
    }
    assert.equal(calls, 1, 'one snapshot per pool, still out: the second scrape waited for it, it did not start another');
  });

  test('one snapshot per pool per scrape, whichever gauge asks; pools swapped by a reload are seen at the next scrape', async () => {
    const registry = new Registry();
    let pools: ReadonlyMap<string, Pool> = poolsOf(['a', 'b']);
    let calls = 0;
    registerDeploymentGauges({
      registry,
      pools: () => pools.values(),
      store: { snapshot: async (layout) => (calls++, snapshotOf(layout)) },
    });
    let metrics = parseExposition(await registry.metrics());
    assert.equal(calls, 1, 'one pool, one snapshot for all the gauges');
    assert.equal(value(metrics, 'spillway_deployment_in_flight', { pool: 'p', deployment: 'a' }), 2);
    assert.equal(value(metrics, 'spillway_deployment_tokens_in_window', { pool: 'p', deployment: 'b' }), 300);
    assert.equal(value(metrics, 'spillway_pool_snapshot_ok', { pool: 'p' }), 1);

    pools = poolsOf(['b', 'c'], 2000);
    metrics = parseExposition(await registry.metrics());
    assert.equal(calls, 2);
    assert.deepEqual(
      matching(metrics, 'spillway_deployment_tpm').map((s) => [s.labels.deployment, s.value]),
      [
        ['b', 2000],
        ['c', 2000],
      ],
    );
    assert.deepEqual(
      matching(metrics, 'spillway_deployment_requests_in_window').map((s) => s.labels.deployment),
      ['b', 'c'],
      'a removed deployment’s series are gone',
    );
  });
});

// ---------------------------------------------------------------------------------------------

const DASHBOARD = 'config/grafana/spillway-dashboard.json';

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string }[];
}

function promtoolInstalled(): boolean {
  return spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0;
}

describe('the Grafana dashboard and the Prometheus config', () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    panels: Panel[];
    templating: { list: { name: string; type: string; query: string | { query: string } }[] };
  };
  const panels = dashboard.panels.filter((p) => p.type !== 'row');
  const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  const variable = dashboard.templating.list.find((v) => v.name === 'pool');
  const variableQuery = typeof variable?.query === 'string' ? variable.query : (variable?.query.query ?? '');
  const names = (expr: string) => [...expr.matchAll(/\b((?:spillway|nodejs|process)_[a-z0-9_]+)\b/g)].map((m) => m[1]!);

  test('every panel has a query, and a $pool variable filters the pool-labelled ones', () => {
    assert.ok(panels.length >= 20, `${panels.length} panels`);
    for (const panel of panels) assert.ok(panel.targets?.length, `${panel.title} has a query`);
    assert.ok(variable, 'a pool variable');
    assert.match(variableQuery, /^label_values\(spillway_\w+, pool\)$/);
    const poolSelected = exprs.filter((e) => e.includes('pool=~"$pool"'));
    assert.ok(poolSelected.length >= 25, `${poolSelected.length} queries filtered by $pool`);
  });

  test('every metric its queries name is in a live gateway’s /metrics, and every spillway_ metric there has a panel', async () => {
    const sim = await simulator([{ name: 'a', completionTokens: 5 }]);
    const name = uniquePool('dash');
    const live = await spawnGateway(testConfig({ pools: { [name]: { deployments: [{ id: 'a', endpoint: sim.url, tpm: 100_000 }] } } }));
    try {
      assert.equal((await chat(live.url, name, { stream: true })).status, 200);
      await sleep(50);
      const { types, samples } = await scrape(live.url);
      const exposed = (metric: string) => {
        if (types.has(metric)) return true;
        const base = metric.replace(/_(bucket|sum|count)$/, '');
        return base !== metric && (types.get(base) === 'histogram' || types.get(base) === 'summary');
      };
      const used = new Set([...exprs, variableQuery].flatMap(names));
      const missing = [...used].filter((metric) => !exposed(metric));
      assert.deepEqual(missing, [], 'metrics the dashboard queries that the gateway does not expose');
      const unused = [...types.keys()].filter((metric) => metric.startsWith('spillway_') && ![...used].some((u) => u.startsWith(metric)));
      assert.deepEqual(unused, [], 'spillway_ metrics without a panel');
      // The variable's metric has a sample for the pool, so the variable lists it.
      assert.ok(samples.some((s) => s.name === variableQuery.match(/\((\w+),/)![1] && s.labels.pool === name));
      // Nothing but these metrics and PromQL's own `up` is named.
      const other = exprs.flatMap((e) => e.replace(/\{[^}]*\}|"[^"]*"|\[[^\]]*\]/g, '').match(/\b[a-z_][a-z0-9_]*\b(?!\s*\()/g) ?? []);
      const keywords = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'le']);
      for (const aggregation of ['sum', 'min', 'max', 'avg', 'count', 'topk', 'bottomk', 'quantile']) keywords.add(aggregation);
      const stray = other.filter(
        (w) =>
          !keywords.has(w) &&
          !used.has(w) &&
          w !== 'up' &&
          !/^(pool|deployment|status|code|outcome|reason|client|kind|cause|instance|state|stream|origin)$/.test(w),
      );
      assert.deepEqual([...new Set(stray)], [], 'names in the queries that are neither metrics nor labels');
    } finally {
      await live.stop();
      await sim.close();
    }
  });

  test(
    'the queries are valid PromQL (promtool)',
    { skip: !promtoolInstalled() && 'promtool not installed (apt-get install prometheus)' },
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'spillway-dash-'));
      const file = join(dir, 'rules.yml');
      const rules = exprs.map((expr, i) => ({
        record: `spillway:dashboard_query_${i}`,
        expr: expr.replaceAll('$__rate_interval', '1m').replaceAll('$pool', '.*'),
      }));
      writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
      const checked = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
      assert.equal(checked.status, 0, checked.stdout + checked.stderr);
    },
  );

  test('Prometheus scrapes every replica of the compose service by DNS, in the monitoring profile', () => {
    const compose = parse(readFileSync('compose.yml', 'utf8')) as {
      services: Record<string, { profiles?: string[]; expose?: string[]; volumes?: string[]; build?: { dockerfile?: string } }>;
    };
    const prometheus = compose.services.prometheus;
    assert.ok(prometheus, 'a prometheus service');
    assert.deepEqual(prometheus.profiles, ['monitoring']);
    assert.ok(prometheus.volumes?.some((v) => v.startsWith('./config/prometheus.yml:')));
    const config = parse(readFileSync('config/prometheus.yml', 'utf8')) as {
      scrape_configs: { job_name: string; dns_sd_configs?: { names: string[]; type: string; port: number }[] }[];
    };
    const job = config.scrape_configs.find((c) => c.dns_sd_configs);
    assert.ok(job, 'a dns_sd job');
    const [sd] = job.dns_sd_configs!;
    assert.deepEqual(sd!.names, ['gateway']);
    assert.equal(sd!.type, 'A');
    assert.ok(compose.services[sd!.names[0]!]?.expose?.includes(String(sd!.port)), 'the port the gateway service exposes');
    if (promtoolInstalled()) {
      const checked = spawnSync('promtool', ['check', 'config', 'config/prometheus.yml'], { encoding: 'utf8' });
      assert.equal(checked.status, 0, checked.stdout + checked.stderr);
    }
  });
});
