/**
 * Config reload with a real process (README "Operating Spillway"): SIGHUP, or POST /admin/reload,
 * re-reads GATEWAY_CONFIG and swaps it in whole. New requests see the new pools and deployments
 * (/admin/pools, /openai/v1/models, x-gateway-deployment, budgets); a stream in flight through a
 * deployment the new file removed completes, and its lease is released in Redis, not left behind;
 * an invalid file is rejected with the same one-line problems as at start-up and the old config
 * keeps serving; the gateway settings that cannot change live are reported as needing a restart.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { createGateway } from '../../gateway/app.ts';
import { ConfigError, loadConfigFile } from '../../shared/config/load.ts';
import type { GatewayConfig } from '../../shared/config/schema.ts';
import type { Simulator } from '../../shared/simulator/index.ts';
import { createStore } from '../../shared/store/index.ts';
import type { Store } from '../../shared/store/types.ts';
import { memoryLogger, redisStore } from '../helpers/collaborators.ts';
import { CLIENT_KEY, spawnGateway, testConfig, type GatewayProcess } from '../helpers/gateway.ts';
import { chat, simulator, uniquePool, until } from '../helpers/fixtures.ts';

const ADMIN_KEY = 'admin-reload-key-0123';
const TOKENS = 25;

/** Reads a stream to its end: generated tokens, finish reason, [DONE]. */
async function readStream(response: Response): Promise<{ tokens: number; finish: string | undefined; done: boolean }> {
  const text = await response.text();
  let tokens = 0;
  let finish: string | undefined;
  for (const event of text.split('\n\n')) {
    const data = event.replace(/^data: /, '');
    if (data === '' || data === '[DONE]') continue;
    const choice = (JSON.parse(data) as { choices: { delta?: { content?: string }; finish_reason?: string | null }[] }).choices[0];
    if (choice?.delta?.content) tokens += 1;
    if (choice?.finish_reason) finish = choice.finish_reason;
  }
  return { tokens, finish, done: text.includes('data: [DONE]') };
}

describe('config reload (a real process)', { timeout: 60_000 }, () => {
  let sim: Simulator;
  let store: Store;
  let gw: GatewayProcess;
  // P loses `old` and gains `added` (preferred), `keep` is re-budgeted; R's one deployment is re-budgeted; Q is new.
  const P = uniquePool('p');
  const R = uniquePool('r');
  const Q = uniquePool('q');

  const v1 = (): GatewayConfig =>
    testConfig({
      pools: {
        [P]: {
          deployments: [
            { id: 'old', endpoint: sim.url, deployment: 'slow', priority: 1 },
            { id: 'keep', endpoint: sim.url, deployment: 'fast', priority: 2, tpm: 100_000 },
          ],
        },
        [R]: { deployments: [{ id: 'r1', endpoint: sim.url, deployment: 'fast', tpm: 3000 }] },
      },
    });
  const v2 = (gateway: Record<string, unknown> = { maxAttempts: 2, leaseMs: 20_000 }): GatewayConfig =>
    testConfig({
      pools: {
        [P]: {
          deployments: [
            { id: 'keep', endpoint: sim.url, deployment: 'fast', priority: 2, tpm: 200_000 },
            { id: 'added', endpoint: sim.url, deployment: 'fresh', priority: 1 },
          ],
        },
        [R]: { deployments: [{ id: 'r1', endpoint: sim.url, deployment: 'fast', tpm: 50_000 }] },
        [Q]: { deployments: [{ id: 'q1', endpoint: sim.url, deployment: 'fast' }] },
      },
      gateway,
    });
  /** A file that does not validate, and the problems start-up reports for it. */
  const invalid = () => {
    writeFileSync(
      gw.file,
      `pools:\n  ${P}:\n    strategy: fastest\n    deployments:\n      - {id: keep, endpoint: nope, deployment: fast, apiKey: k, tpm: 0, tmp: 1}\n`,
    );
    try {
      loadConfigFile(gw.file);
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      return error.problems;
    }
    assert.fail('the file validates');
  };

  const admin = (path: string, init: RequestInit = {}, key = ADMIN_KEY) =>
    fetch(`${gw.url}${path}`, { ...init, headers: { 'api-key': key }, signal: AbortSignal.timeout(10_000) });
  const deploymentsOf = async (): Promise<Record<string, string[]>> => {
    const response = await admin('/admin/pools');
    assert.equal(response.status, 200);
    const { pools } = (await response.json()) as { pools: Record<string, { deployments: { id: string }[] }> };
    return Object.fromEntries(Object.entries(pools).map(([name, pool]) => [name, pool.deployments.map((d) => d.id)]));
  };
  const models = async () => {
    const response = await fetch(`${gw.url}/openai/v1/models`, { headers: { 'api-key': CLIENT_KEY } });
    return ((await response.json()) as { data: { id: string }[] }).data.map((m) => m.id).sort();
  };
  const servedBy = async (pool: string) => {
    const response = await chat(gw.url, pool);
    assert.equal(response.status, 200, await response.clone().text());
    await response.arrayBuffer();
    return response.headers.get('x-gateway-deployment');
  };
  /** max_tokens 4000: more than R's 3000 tpm before the reload, well within its 50 000 after. */
  const bigOnR = async () => {
    const response = await chat(gw.url, R, { body: { max_tokens: 4000 } });
    await response.arrayBuffer();
    return response.status;
  };
  const logAfter = async (from: number, message: RegExp) => {
    await until(() => gw.logs.slice(from).some((l) => message.test(String(l.message))), 3000, `a log line ${message}`);
    return gw.logs.slice(from).find((l) => message.test(String(l.message)))!;
  };

  before(async () => {
    sim = await simulator([{ name: 'slow', latency: { ttftMs: 20, perTokenMs: 120 }, completionTokens: TOKENS }, 'fast', 'fresh']);
    store = createStore({ redisUrl: process.env.REDIS_URL });
    gw = await spawnGateway(v1(), { ADMIN_API_KEY: ADMIN_KEY });
  });
  after(async () => {
    await gw?.stop('SIGKILL');
    await store.close();
    await sim.close();
  });

  test('SIGHUP: added, removed and re-budgeted deployments for new requests; a stream on a removed one completes', async () => {
    assert.deepEqual(await deploymentsOf(), { [P]: ['old', 'keep'], [R]: ['r1'] });
    assert.equal(await bigOnR(), 400, 'over every budget of R before the reload');
    const stream = await chat(gw.url, P, { stream: true, body: { max_tokens: 100 }, signal: AbortSignal.timeout(20_000) });
    assert.equal(stream.headers.get('x-gateway-deployment'), 'old');
    const reading = readStream(stream);

    writeFileSync(gw.file, stringify(v2()));
    const from = gw.logs.length;
    gw.child.kill('SIGHUP');
    const line = await logAfter(from, /^config reloaded/);
    assert.equal(line.trigger, 'SIGHUP');
    assert.equal(line.status, 'reloaded');
    assert.deepEqual(line.pools, { added: [Q], removed: [], changed: [] });
    assert.deepEqual(line.deployments, { added: [`${P}/added`, `${Q}/q1`], removed: [`${P}/old`], changed: [`${P}/keep`, `${R}/r1`] });
    assert.deepEqual(line.applied, ['gateway.maxAttempts']);
    assert.deepEqual(line.needsRestart, ['gateway.leaseMs']);
    assert.equal(line.level, 'warn', 'a setting that needs a restart is a warning');

    // New requests see the new config while the stream through `old` still runs.
    assert.deepEqual(await deploymentsOf(), { [P]: ['keep', 'added'], [R]: ['r1'], [Q]: ['q1'] });
    assert.deepEqual(await models(), [P, Q, R].sort());
    assert.equal(await servedBy(P), 'added');
    assert.equal(await servedBy(Q), 'q1');
    assert.equal(await bigOnR(), 200, 'R re-budgeted');
    assert.equal(sim.stats('slow').inFlight, 1, 'the stream through the removed deployment is still running');

    const read = await reading;
    assert.deepEqual(read, { tokens: TOKENS, finish: 'stop', done: true }, 'the stream through the removed deployment came whole');
    // Its lease was released where it was granted: nothing of it is left in flight in Redis.
    const layout = { name: P, strategy: 'least-requests' as const, deployments: [{ id: 'old', priority: 1, weight: 1 }] };
    await until(async () => (await store.snapshot(layout))[0]?.inFlight === 0, 2000, 'the removed deployment’s lease to be released');
  });

  test('SIGHUP with an invalid file: the problems logged one per line, the old config keeps serving', async () => {
    const problems = invalid();
    assert.ok(problems.length >= 3 && problems.every((p) => !p.includes('\n')), problems.join('\n'));
    const from = gw.logs.length;
    gw.child.kill('SIGHUP');
    const line = await logAfter(from, /^config reload rejected/);
    assert.equal(line.message, 'config reload rejected: the old config keeps serving');
    assert.equal(line.level, 'error');
    assert.deepEqual(line.problems, problems);
    assert.equal(line.error, `invalid config ${gw.file}:\n${problems.map((p) => `  - ${p}`).join('\n')}`, 'the start-up message');

    assert.deepEqual(await deploymentsOf(), { [P]: ['keep', 'added'], [R]: ['r1'], [Q]: ['q1'] });
    assert.equal(await servedBy(P), 'added');
    assert.equal(await bigOnR(), 200);
    assert.equal(gw.child.exitCode, null, 'still running');
  });

  test('POST /admin/reload: guarded, answers the outcome (422 with the problems, 200 with the changes)', async () => {
    assert.equal((await admin('/admin/reload', { method: 'POST' }, 'wrong-admin-key')).status, 401);

    const problems = invalid();
    const rejected = await admin('/admin/reload', { method: 'POST' });
    assert.equal(rejected.status, 422);
    assert.deepEqual(((await rejected.json()) as { problems: string[] }).problems, problems);
    assert.deepEqual((await deploymentsOf())[Q], ['q1'], 'the old config keeps serving');

    // Q removed; the settings back to where they were: leaseMs never changed, so nothing needs a restart.
    const v3 = v2({});
    delete (v3.pools as Record<string, unknown>)[Q];
    writeFileSync(gw.file, stringify(v3));
    const from = gw.logs.length;
    const reloaded = await admin('/admin/reload', { method: 'POST' });
    assert.equal(reloaded.status, 200);
    const body = (await reloaded.json()) as Record<string, unknown>;
    assert.equal(body.status, 'reloaded');
    assert.equal(body.changed, true);
    assert.deepEqual(body.pools, { added: [], removed: [Q], changed: [] });
    assert.deepEqual(body.deployments, { added: [], removed: [`${Q}/q1`], changed: [] });
    assert.deepEqual(body.applied, ['gateway.maxAttempts']);
    assert.deepEqual(body.needsRestart, []);
    const line = await logAfter(from, /^config reloaded/);
    assert.equal(line.trigger, 'POST /admin/reload');
    assert.equal(line.level, 'info');
    assert.deepEqual(await models(), [P, R].sort());
    assert.equal((await chat(gw.url, Q)).status, 404, 'a removed pool is unknown to new requests');

    const again = await admin('/admin/reload', { method: 'POST' });
    assert.equal(again.status, 200);
    const same = (await again.json()) as Record<string, unknown>;
    assert.equal(same.changed, false);
    assert.deepEqual(same.deployments, { added: [], removed: [], changed: [] });
  });
});

describe('config reload: breakers decide on the pool in force', () => {
  test('a breaker made before a reload never takes out the last deployment of the new pool', async () => {
    const sim = await simulator(['a', 'b']);
    const store = redisStore();
    const { logger, lines } = memoryLogger();
    const pool = uniquePool();
    // b is preferred; a (a spare) is removed by the reload. The breaker alone decides (no outlier ejection).
    const gateway = { maxAttempts: 1, outlier: { consecutiveFailures: 0 }, breaker: { volumeThreshold: 2, errorThresholdPercentage: 50 } };
    const v1 = testConfig({
      pools: {
        [pool]: {
          deployments: [
            { id: 'a', endpoint: sim.url, priority: 2 },
            { id: 'b', endpoint: sim.url, priority: 1 },
          ],
        },
      },
      gateway,
    });
    const v2 = testConfig({ pools: { [pool]: { deployments: [{ id: 'b', endpoint: sim.url, priority: 1 }] } }, gateway });
    let file = v1;
    const instance = createGateway({ config: v1, store, logger, loadConfig: () => file });
    const { url } = await instance.listen(0);
    try {
      // b's breaker is made now, with the pool as it is: a beside b.
      const first = await chat(url, pool);
      assert.equal(first.headers.get('x-gateway-deployment'), 'b');
      await first.arrayBuffer();
      file = v2;
      assert.equal(instance.reload({ trigger: 'test' }).status, 'reloaded');
      sim.setFault('b', { fault: { kind: 'status', status: 500 } });
      for (let i = 0; i < 3; i++) {
        const failed = await chat(url, pool);
        assert.equal(failed.status, 500);
        await failed.arrayBuffer();
      }
      await until(() => lines.some((l) => l.message.startsWith('deployment kept in rotation')), 2000, 'the breaker’s decision');
      // With the pool of the old config, a (idle, in rotation there) would have let b be taken out.
      const layout = { name: pool, strategy: 'least-requests' as const, deployments: [{ id: 'b', priority: 1, weight: 1 }] };
      assert.equal((await store.snapshot(layout))[0]?.circuit, 'closed', 'b, the last of its pool, stays in rotation');
      assert.ok(!lines.some((l) => l.message.startsWith('circuit opened')), 'no circuit opened');
    } finally {
      await instance.close();
      await store.close();
      await sim.close();
    }
  });
});
