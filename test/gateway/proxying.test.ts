import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import OpenAI, { AzureOpenAI } from 'openai';
import type { Simulator } from '../../shared/simulator/index.ts';
import { CLIENT_KEY, UPSTREAM_KEY, startGateway, testConfig, type RunningGateway } from '../helpers/gateway.ts';
import { chat, simulator, uniquePool } from '../helpers/fixtures.ts';

describe('routing through the gateway', () => {
  let sim: Simulator;
  const running: RunningGateway[] = [];
  before(async () => {
    sim = await simulator(['d1', 'd2', 'd3', { name: 'pinned' }, { name: 'pinned-embed', model: 'text-embedding-3-small' }], {
      latency: { ttftMs: 150, perTokenMs: 0 },
    });
  });
  after(async () => {
    await Promise.all(running.map((g) => g.close()));
    await sim.close();
  });
  async function gateway(pool: string, strategy = 'least-requests', extra: Record<string, unknown> = {}): Promise<RunningGateway> {
    const g = await startGateway(
      testConfig({ pools: { [pool]: { strategy, deployments: ['d1', 'd2', 'd3'].map((id) => ({ id, endpoint: sim.url })) } }, ...extra }),
    );
    running.push(g);
    return g;
  }

  test('least-requests spreads concurrent requests evenly over the deployments', async () => {
    const pool = uniquePool();
    const g = await gateway(pool);
    sim.resetStats();
    const responses = await Promise.all(Array.from({ length: 6 }, () => chat(g.url, pool)));
    assert.deepEqual(
      responses.map((r) => r.status),
      [200, 200, 200, 200, 200, 200],
    );
    const served = responses.map((r) => r.headers.get('x-gateway-deployment'));
    for (const id of ['d1', 'd2', 'd3']) {
      assert.equal(served.filter((s) => s === id).length, 2, `${id} served two of six`);
      assert.equal(sim.stats(id).received, 2);
    }
    for (const r of responses) assert.equal(r.headers.get('x-gateway-attempts'), '1');
  });

  test('round-robin rotates fairly across three instances sharing Redis', async () => {
    const pool = uniquePool();
    const instances = [await gateway(pool, 'round-robin'), await gateway(pool, 'round-robin'), await gateway(pool, 'round-robin')];
    sim.resetStats();
    const order: string[] = [];
    for (let i = 0; i < 12; i++) {
      const response = await chat(instances[i % 3]!.url, pool);
      assert.equal(response.status, 200);
      order.push(String(response.headers.get('x-gateway-deployment')));
    }
    // One cluster-wide cursor: the rotation continues from instance to instance.
    const start = order.indexOf('d1');
    const rotation = ['d1', 'd2', 'd3'];
    order.forEach((id, i) => assert.equal(id, rotation[(i - start + 300) % 3], `request ${i} went to ${id}: ${order.join(',')}`));
    for (const id of rotation) assert.equal(sim.stats(id).received, 4);
  });

  test('Azure-style, /openai/v1 and /v1 routes reach the deployment with its own key, path and api-version', async () => {
    const pool = uniquePool();
    const embedPool = uniquePool();
    const g = await startGateway(
      testConfig({
        pools: {
          [pool]: { deployments: [{ id: 'only', endpoint: sim.url, deployment: 'pinned', apiVersion: '2024-06-01' }] },
          [embedPool]: { deployments: [{ id: 'embed', endpoint: sim.url, deployment: 'pinned-embed', apiVersion: '2024-06-01' }] },
        },
      }),
    );
    running.push(g);
    const azure = await chat(g.url, pool, { headers: { 'x-request-id': 'trace-123' } });
    assert.equal(azure.status, 200);
    assert.equal(azure.headers.get('x-request-id'), 'trace-123');
    assert.equal(azure.headers.get('x-gateway-deployment'), 'only');
    for (const path of ['/openai/v1/chat/completions', '/v1/chat/completions']) {
      const response = await fetch(`${g.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${CLIENT_KEY}` },
        body: JSON.stringify({ model: pool, messages: [{ role: 'user', content: 'hi' }] }),
      });
      assert.equal(response.status, 200, path);
      const body = (await response.json()) as { object: string; usage: { total_tokens: number } };
      assert.equal(body.object, 'chat.completion');
      assert.ok(body.usage.total_tokens > 0);
    }
    const embeddings = await fetch(`${g.url}/openai/deployments/${embedPool}/embeddings?api-version=2024-10-21`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': CLIENT_KEY },
      body: JSON.stringify({ input: ['a', 'b'] }),
    });
    assert.equal(embeddings.status, 200);
    const seen = [...sim.recentRequests('pinned').slice(-3), ...sim.recentRequests('pinned-embed').slice(-1)];
    assert.deepEqual(
      seen.map((r) => [r.path, r.apiVersion, r.auth]),
      [
        ['/openai/deployments/pinned/chat/completions', '2024-06-01', 'api-key'],
        ['/openai/deployments/pinned/chat/completions', '2024-06-01', 'api-key'],
        ['/openai/deployments/pinned/chat/completions', '2024-06-01', 'api-key'],
        ['/openai/deployments/pinned-embed/embeddings', '2024-06-01', 'api-key'],
      ],
    );
    assert.equal(seen[0]?.clientRequestId, 'trace-123', 'x-request-id is forwarded upstream');
  });

  test("the client's api-version is kept upstream when the deployment sets none", async () => {
    const pool = uniquePool();
    const g = await gateway(pool);
    await fetch(`${g.url}/openai/deployments/${pool}/chat/completions?api-version=2024-09-01-preview`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': CLIENT_KEY },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] }),
    });
    const latest = ['d1', 'd2', 'd3']
      .flatMap((id) => sim.recentRequests(id))
      .sort((a, b) => a.at - b.at)
      .at(-1);
    assert.equal(latest?.apiVersion, '2024-09-01-preview');
  });

  test('the openai SDK works through the gateway, Azure and OpenAI clients, streaming and not', async () => {
    const pool = uniquePool();
    const g = await gateway(pool);
    const azure = new AzureOpenAI({ endpoint: g.url, apiKey: CLIENT_KEY, apiVersion: '2024-10-21', deployment: pool, maxRetries: 0 });
    const completion = await azure.chat.completions.create({ model: pool, messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 5 });
    assert.equal(completion.choices[0]?.message.role, 'assistant');
    assert.equal(completion.usage?.completion_tokens, 5);

    const openai = new OpenAI({ baseURL: `${g.url}/openai/v1`, apiKey: CLIENT_KEY, maxRetries: 0 });
    const stream = await openai.chat.completions.create({
      model: pool,
      messages: [{ role: 'user', content: 'Hello!' }],
      max_tokens: 4,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: number | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage.completion_tokens;
    }
    assert.equal(text.trim().split(/\s+/).length, 4);
    assert.equal(usage, 4);
  });

  describe('bad input gets Azure-shaped errors without secrets', () => {
    let g: RunningGateway;
    let slow: RunningGateway;
    const pool = uniquePool();
    before(async () => {
      g = await gateway(pool, 'least-requests', { gateway: { maxBodyBytes: 2048 } });
      slow = await gateway(pool, 'least-requests', { gateway: { bodyTimeoutMs: 300 } });
    });

    async function expectError(response: Response, status: number, code: string): Promise<void> {
      assert.equal(response.status, status);
      const text = await response.text();
      const body = JSON.parse(text) as { error: { code: string; message: string } };
      assert.equal(body.error.code, code);
      assert.ok(body.error.message.length > 0);
      assert.ok(!text.includes(UPSTREAM_KEY), 'no upstream key');
      assert.ok(!text.includes(sim.url), 'no upstream URL');
      assert.ok(!/\bat .+\(.+:\d+:\d+\)/.test(text), 'no stack trace');
      assert.ok(response.headers.get('x-request-id'), 'errors carry a request id');
    }

    test('401 without a key, with a wrong key, and with the upstream key', async () => {
      await expectError(await chat(g.url, pool, { key: '' }), 401, '401');
      await expectError(await chat(g.url, pool, { key: 'wrong-key-123' }), 401, '401');
      await expectError(await chat(g.url, pool, { key: UPSTREAM_KEY }), 401, '401');
    });

    test('404 for an unknown pool, an unknown model and an unknown route', async () => {
      await expectError(await chat(g.url, 'no-such-pool'), 404, 'DeploymentNotFound');
      const v1 = await fetch(`${g.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'api-key': CLIENT_KEY },
        body: JSON.stringify({ model: 'nope', messages: [] }),
      });
      await expectError(v1, 404, 'DeploymentNotFound');
      await expectError(await fetch(`${g.url}/openai/deployments/${pool}/images/generations`, { method: 'POST' }), 404, '404');
    });

    test('400 for bad JSON, a non-object body, an empty body and a missing model', async () => {
      const post = (body: string, path = `/openai/deployments/${pool}/chat/completions`) =>
        fetch(`${g.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'api-key': CLIENT_KEY }, body });
      await expectError(await post('{"messages": ['), 400, 'invalid_request_error');
      await expectError(await post('[1,2]'), 400, 'invalid_request_error');
      await expectError(await post(''), 400, 'invalid_request_error');
      await expectError(await post('{"messages":[]}', '/v1/chat/completions'), 400, 'invalid_request_error');
    });

    test('413 above the body limit, before anything is sent upstream', async () => {
      sim.resetStats();
      const response = await chat(g.url, pool, { body: { messages: [{ role: 'user', content: 'x'.repeat(4096) }] } });
      await expectError(response, 413, 'RequestEntityTooLarge');
      assert.equal(
        ['d1', 'd2', 'd3'].reduce((sum, id) => sum + sim.stats(id).received, 0),
        0,
      );
    });

    test('413 for a body that grows past the limit without a content-length, and the connection is closed', async () => {
      sim.resetStats();
      const chunks = [Buffer.from('{"messages":[{"role":"user","content":"'), Buffer.from('x'.repeat(4096)), Buffer.from('"}]}')];
      const response = await postRaw(
        g.url,
        `/openai/deployments/${pool}/chat/completions`,
        { 'api-key': CLIENT_KEY, 'content-type': 'application/json' },
        chunks,
      );
      assert.equal(response.status, 413);
      assert.equal(response.headers.connection, 'close');
      assert.equal(JSON.parse(response.body).error.code, 'RequestEntityTooLarge');
      assert.equal(
        ['d1', 'd2', 'd3'].reduce((sum, id) => sum + sim.stats(id).received, 0),
        0,
      );
    });

    test('408 for a body that does not arrive in time, and the connection is closed', async () => {
      sim.resetStats();
      const server = new URL(slow.url);
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(server.port), server.hostname, () => {
          socket.write(
            `POST /openai/deployments/${pool}/chat/completions HTTP/1.1\r\nhost: x\r\napi-key: ${CLIENT_KEY}\r\ncontent-length: 100\r\n\r\n{"messages":`,
          );
        });
        let text = '';
        socket.setEncoding('utf8');
        socket.on('data', (chunk: string) => (text += chunk));
        // The gateway closes the connection after its answer: 'end' comes without the client closing.
        socket.on('end', () => resolve(text));
        socket.on('error', reject);
      });
      assert.match(answer, /^HTTP\/1\.1 408 /);
      assert.match(answer, /\r\nconnection: close\r\n/i);
      assert.match(answer, /"code":"RequestTimeout"/);
      assert.equal(
        ['d1', 'd2', 'd3'].reduce((sum, id) => sum + sim.stats(id).received, 0),
        0,
      );
    });

    test('a gzip, deflate or br body is inflated and sent upstream plain; an unknown content-encoding is 415; inflating past the limit is 413', async () => {
      sim.resetStats();
      const body = JSON.stringify({ messages: [{ role: 'user', content: 'compressed hello' }], max_tokens: 3 });
      const headers = { 'api-key': CLIENT_KEY, 'content-type': 'application/json', 'content-encoding': 'gzip' };
      // An upstream that records what it received.
      const received: { headers: Record<string, unknown>; body: string }[] = [];
      const echo = createServer((req, res) => {
        let text = '';
        req.setEncoding('utf8');
        req.on('data', (chunk: string) => (text += chunk));
        req.on('end', () => {
          received.push({ headers: req.headers, body: text });
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 } }));
        });
      });
      await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
      const echoPool = uniquePool();
      const viaEcho = await startGateway(
        testConfig({
          pools: { [echoPool]: { deployments: [{ id: 'echo', endpoint: `http://127.0.0.1:${(echo.address() as AddressInfo).port}` }] } },
        }),
      );
      running.push(viaEcho);
      try {
        const ok = await postRaw(viaEcho.url, `/openai/deployments/${echoPool}/chat/completions?api-version=2024-10-21`, headers, [
          gzipSync(body),
        ]);
        assert.equal(ok.status, 200, ok.body);
        assert.equal(received.length, 1);
        assert.equal(received[0]?.body, body, 'upstream received the inflated body');
        assert.equal(received[0]?.headers['content-encoding'], undefined, 'and no content-encoding with it');
        assert.equal(received[0]?.headers['content-length'], String(Buffer.byteLength(body)));
        for (const [encoding, compress] of [
          ['deflate', deflateSync],
          ['br', brotliCompressSync],
        ] as const) {
          const compressed = await postRaw(
            viaEcho.url,
            `/openai/deployments/${echoPool}/chat/completions?api-version=2024-10-21`,
            { ...headers, 'content-encoding': encoding },
            [compress(body)],
          );
          assert.equal(compressed.status, 200, `${encoding}: ${compressed.body}`);
          const seen = received.at(-1);
          assert.equal(seen?.body, body, `${encoding}: upstream received the inflated body`);
          assert.equal(seen?.headers['content-encoding'], undefined, `${encoding}: and no content-encoding with it`);
        }
        assert.equal(received.length, 3);
      } finally {
        echo.closeAllConnections();
        echo.close();
      }
      const zstd = await postRaw(g.url, `/openai/deployments/${pool}/chat/completions`, { ...headers, 'content-encoding': 'zstd' }, [
        Buffer.from(body),
      ]);
      assert.equal(zstd.status, 415);
      assert.equal(JSON.parse(zstd.body).error.code, 'UnsupportedMediaType');
      // 8 KiB of one letter compresses to a few dozen bytes: the limit applies to what it inflates to.
      const bomb = gzipSync(JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(8192) }] }));
      assert.ok(bomb.length < 2048);
      assert.equal((await postRaw(g.url, `/openai/deployments/${pool}/chat/completions`, headers, [bomb])).status, 413);
      assert.equal((await postRaw(g.url, `/openai/deployments/${pool}/chat/completions`, headers, [Buffer.from('not gzip')])).status, 400);
    });

    test('routes match as Express did: any case, a trailing slash; a bad escape in the pool is 400; other methods are 404', async () => {
      const body = JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
      const headers = { 'api-key': CLIENT_KEY, 'content-type': 'application/json' };
      const upper = await postRaw(g.url, `/OpenAI/Deployments/${pool}/Chat/Completions/?api-version=2024-10-21`, headers, [
        Buffer.from(body),
      ]);
      assert.equal(upper.status, 200, upper.body);
      await expectError(
        await fetch(`${g.url}/openai/deployments/%E0%A4%A/chat/completions`, { method: 'POST', headers, body }),
        400,
        'invalid_request_error',
      );
      await expectError(
        await fetch(`${g.url}/openai/deployments/${pool}/chat/completions`, { headers: { 'api-key': CLIENT_KEY } }),
        404,
        '404',
      );
    });

    test('an upstream 400 is passed through and never retried', async () => {
      sim.resetStats();
      const response = await chat(g.url, pool, { body: { messages: 'not a list' } });
      assert.equal(response.status, 400);
      assert.equal(response.headers.get('x-gateway-attempts'), '1');
      assert.equal(
        ['d1', 'd2', 'd3'].reduce((sum, id) => sum + sim.stats(id).received, 0),
        1,
      );
    });
  });
});

/** A POST written chunk by chunk (no content-length unless given): what fetch cannot send. */
function postRaw(
  base: string,
  path: string,
  headers: Record<string, string>,
  chunks: Buffer[],
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { method: 'POST', headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    // The gateway may answer (413) and close before the whole body is written.
    req.on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' || error.code === 'EPIPE' ? undefined : reject(error)));
    for (const chunk of chunks) req.write(chunk);
    req.end();
  });
}
