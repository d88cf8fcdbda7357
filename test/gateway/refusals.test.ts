/**
 * Requests refused before routing are logged and counted like routed ones, and upstream headers
 * that name internal deployments do not reach clients unless the operator says so.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createGateway, type Gateway } from '../../gateway/app.ts';
import { createStore } from '../../shared/store/index.ts';
import type { Simulator } from '../../shared/simulator/index.ts';
import { memoryLogger, type LogLine } from '../helpers/collaborators.ts';
import { chat, simulator, uniquePool } from '../helpers/fixtures.ts';
import { CLIENT_KEY, testConfig } from '../helpers/gateway.ts';

describe('refused requests and hidden headers', () => {
  let sim: Simulator;
  const pool = uniquePool();
  const gateways: Gateway[] = [];
  let lines: LogLine[];
  let url: string;
  let openUrl: string;

  before(async () => {
    sim = await simulator(['d1']);
    const memory = memoryLogger();
    lines = memory.lines;
    const deployments = [{ id: 'd1', endpoint: sim.url }];
    const hiding = createGateway({
      config: testConfig({ pools: { [pool]: { deployments } } }),
      store: createStore({}),
      logger: memory.logger,
    });
    const open = createGateway({
      config: testConfig({ pools: { [pool]: { deployments } }, gateway: { hiddenResponseHeaders: [] } }),
      store: createStore({}),
      logger: memoryLogger().logger,
    });
    gateways.push(hiding, open);
    url = (await hiding.listen(0)).url;
    openUrl = (await open.listen(0)).url;
  });
  after(async () => {
    await Promise.all(gateways.map((g) => g.close()));
    await sim.close();
  });

  const refusals = () => lines.filter((line) => line.message === 'request refused');

  test('each refusal is one line with status, code and the client when known, and a metric; no key, no body', async () => {
    const before = refusals().length;
    const secret = 'sk-not-a-real-client-key';
    assert.equal((await chat(url, pool, { key: secret })).status, 401);
    const badJson = await fetch(`${url}/openai/v1/chat/completions`, {
      method: 'POST',
      headers: { 'api-key': CLIENT_KEY, 'content-type': 'application/json' },
      body: '{"model": "x", "messages": [',
    });
    assert.equal(badJson.status, 400);
    assert.equal((await chat(url, 'no-such-pool')).status, 404);
    assert.equal((await fetch(`${url}/openai/deployments/${pool}/images/generations`, { method: 'POST' })).status, 404);
    const seen = refusals().slice(before);
    assert.deepEqual(
      seen.map((line) => [line.status, line.code, line.client]),
      [
        [401, '401', undefined],
        [400, 'invalid_request_error', 'tests'],
        [404, 'DeploymentNotFound', 'tests'],
        [404, '404', undefined],
      ],
    );
    for (const line of seen) assert.equal(typeof line.requestId, 'string');
    assert.equal(seen[3]!.path, `/openai/deployments/${pool}/images/generations`);
    assert.ok(!JSON.stringify(lines).includes(secret), 'the key presented is never logged');
    assert.ok(!JSON.stringify(lines).includes('"messages": ['), 'nor the body');
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, /spillway_rejected_requests_total\{status="401",code="401"\} 1/);
    assert.match(metrics, /spillway_rejected_requests_total\{status="400",code="invalid_request_error"\} 1/);
  });

  test('the header naming the internal deployment is hidden by default, passed on when the operator lists none', async () => {
    const hidden = await chat(url, pool);
    assert.equal(hidden.status, 200);
    assert.equal(hidden.headers.get('x-ms-deployment-name'), null);
    assert.ok(hidden.headers.get('apim-request-id'), 'apim-request-id stays: Azure support asks for it');
    const shown = await chat(openUrl, pool);
    assert.equal(shown.headers.get('x-ms-deployment-name'), 'd1');
  });
});
