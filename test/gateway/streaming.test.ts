import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect } from 'node:net';
import { after, afterEach, before, describe, test } from 'node:test';
import type { Simulator } from '../../shared/simulator/index.ts';
import type { PoolLayout } from '../../shared/store/types.ts';
import { CLIENT_KEY, startGateway, testConfig, type RunningGateway } from '../helpers/gateway.ts';
import { chat, simulator, uniquePool, until } from '../helpers/fixtures.ts';

describe('streams and client disconnects', () => {
  let sim: Simulator;
  let g: RunningGateway;
  const pool = uniquePool();
  const layout: PoolLayout = {
    name: pool,
    strategy: 'least-requests',
    deployments: [
      { id: 'slow', priority: 1, weight: 1 },
      { id: 'spare', priority: 2, weight: 1 },
    ],
  };
  before(async () => {
    // 10 tokens at 80 ms each: a stream takes about a second upstream.
    sim = await simulator(
      [
        { name: 'slow', completionTokens: 10 },
        { name: 'spare', completionTokens: 10 },
      ],
      { latency: { ttftMs: 50, perTokenMs: 80 } },
    );
    g = await startGateway(
      testConfig({
        pools: {
          [pool]: {
            deployments: [
              { id: 'slow', endpoint: sim.url },
              { id: 'spare', endpoint: sim.url, priority: 2 },
            ],
          },
        },
        gateway: { streamIdleTimeoutMs: 400, leaseMs: 30_000 },
      }),
    );
  });
  afterEach(() => sim.reset());
  after(async () => {
    await g.close();
    await sim.close();
  });
  const inFlight = async (id: string) => (await g.store.snapshot(layout)).find((d) => d.id === id)?.inFlight;

  test('chunks pass through as they come: the client holds the first before upstream has finished', async () => {
    const response = await chat(g.url, pool, { stream: true, body: { max_tokens: 10 } });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    while (!text.includes('"content":" ')) text += decoder.decode((await reader.read()).value);
    assert.equal(sim.stats('slow').inFlight, 1, 'upstream is still generating when the first token reached the client');
    assert.equal(sim.stats('slow').served, 0);
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) text += decoder.decode(chunk.value);
    assert.ok(text.trimEnd().endsWith('data: [DONE]'));
    assert.equal(sim.stats('slow').served, 1);
  });

  test('a client that disconnects mid-stream aborts the upstream request and frees the lease at once', async () => {
    const controller = new AbortController();
    const response = await chat(g.url, pool, { stream: true, body: { max_tokens: 10 }, signal: controller.signal });
    const reader = response.body!.getReader();
    await reader.read();
    await until(async () => (await inFlight('slow')) === 1, 2000, 'only this stream to hold a lease');
    controller.abort();
    await until(() => sim.stats('slow').aborted === 1, 2000, 'the simulator to see the upstream connection close');
    await until(async () => (await inFlight('slow')) === 0, 2000, 'the lease to be released');
    assert.equal(sim.stats('slow').served, 0);
  });

  test('a client that disconnects while upstream has not answered yet also aborts upstream', async () => {
    sim.setFault('slow', { fault: { kind: 'hang' } });
    await new Promise<void>((resolve) => {
      const req = request(`${g.url}/openai/deployments/${pool}/chat/completions?api-version=2024-10-21`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'api-key': CLIENT_KEY },
      });
      req.on('error', () => resolve());
      req.end(JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] }));
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 200);
    });
    await until(() => sim.stats('slow').aborted === 1, 2000, 'the simulator to see the upstream connection close');
    await until(async () => (await inFlight('slow')) === 0, 2000, 'the lease to be released');
    assert.equal(sim.stats('spare').received, 0, 'a gone client is not failed over');
  });

  test('a client that leaves halfway through sending its body reaches no deployment, and the gateway serves on', async () => {
    sim.resetStats();
    const server = new URL(g.url);
    await new Promise<void>((resolve, reject) => {
      const socket = connect(Number(server.port), server.hostname, () => {
        socket.write(
          `POST /openai/deployments/${pool}/chat/completions HTTP/1.1\r\nhost: x\r\napi-key: ${CLIENT_KEY}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"messages":[`,
        );
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 100);
      });
      socket.on('error', reject);
    });
    const after = await chat(g.url, pool, { body: { max_tokens: 2 } });
    assert.equal(after.status, 200);
    await after.text();
    assert.equal(sim.stats('slow').received + sim.stats('spare').received, 1, 'only the complete request went upstream');
    assert.equal(await inFlight('slow'), 0);
  });

  test('a stream fails over only before its first byte', async () => {
    sim.setFault('slow', { fault: { kind: 'status', status: 503 }, count: 1 });
    const before = await chat(g.url, pool, { stream: true });
    assert.equal(before.status, 200);
    assert.equal(before.headers.get('x-gateway-deployment'), 'spare');
    assert.match(await before.text(), /data: \[DONE\]/);

    // Once bytes flowed, a broken upstream ends the client's stream; it is not retried elsewhere.
    sim.setFault('slow', { fault: { kind: 'reset-mid-stream', afterChunks: 3 }, count: 1 });
    sim.resetStats();
    const during = await chat(g.url, pool, { stream: true });
    assert.equal(during.status, 200);
    assert.equal(during.headers.get('x-gateway-deployment'), 'slow');
    await assert.rejects(during.text(), 'the client sees the stream break');
    assert.equal(sim.stats('spare').received, 0);
    await until(async () => (await inFlight('slow')) === 0, 2000, 'the lease to be released');
  });

  test('a stream that stalls is cut after the idle timeout and its lease freed', async () => {
    sim.setFault('slow', { fault: { kind: 'stall-mid-stream', afterChunks: 3 }, count: 1 });
    const started = Date.now();
    const response = await chat(g.url, pool, { stream: true });
    assert.equal(response.status, 200);
    await assert.rejects(response.text());
    assert.ok(Date.now() - started >= 400, 'cut by the 400 ms idle timeout, not before');
    await until(() => sim.stats('slow').aborted === 1, 2000, 'the upstream connection to be closed');
    await until(async () => (await inFlight('slow')) === 0, 2000, 'the lease to be released');
  });
});
