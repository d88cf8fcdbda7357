import assert from 'node:assert/strict';
import {
  Agent,
  createServer,
  request,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { ClientAuth } from '../../../gateway/http/auth.ts';
import { prepareRequest, type PrepareDeps } from '../../../gateway/http/prepare-request.ts';
import { matchProxiedRoute } from '../../../gateway/http/proxied-route.ts';
import { buildPools, ResourceDirectory } from '../../../gateway/pools.ts';
import type { ProxiedRequest } from '../../../gateway/routing/proxied-request.ts';
import { NOWHERE } from '../../helpers/collaborators.ts';
import { CLIENT_KEY, testConfig } from '../../helpers/gateway.ts';
import { uniquePool } from '../../helpers/fixtures.ts';
import { encodeId, resourceTagOf } from '../../../gateway/resource-ids.ts';
import { sharedByTheFile } from '../../helpers/file-hooks.ts';

const MAX_BODY = 16 * 1024;
const BODY_TIMEOUT_MS = 300;
const POOL = uniquePool('gpt-4o');
const EMBEDDINGS = uniquePool('embed');
const BUDGETED = uniquePool('budgeted');

const config = testConfig({
  pools: {
    [POOL]: { deployments: [{ id: 'd1', endpoint: NOWHERE, model: 'gpt-4o' }] },
    [EMBEDDINGS]: { deployments: [{ id: 'e1', endpoint: NOWHERE, model: 'text-embedding-3-small' }] },
    [BUDGETED]: {
      deployments: [
        { id: 'small', endpoint: NOWHERE, model: 'gpt-4o', tpm: 1000 },
        { id: 'large', endpoint: `${NOWHERE}0`, model: 'gpt-4o', tpm: 2000 },
      ],
    },
  },
  gateway: { maxBodyBytes: MAX_BODY, bodyTimeoutMs: BODY_TIMEOUT_MS },
  clients: [{ name: 'team-a', apiKey: CLIENT_KEY, tpm: 5000 }],
});
const pools = buildPools(config);
const deps: PrepareDeps = {
  settings: config.gateway,
  auth: new ClientAuth(config.clients),
  pools,
  resources: new ResourceDirectory(pools),
};

/** What prepareRequest decided, on the server side, for each request in arrival order, and the response it wrote to. */
const prepared: Promise<ProxiedRequest | undefined>[] = [];
const responses: ServerResponse[] = [];
let server: Server;
let port: number;
// A keep-alive client, as the SDKs are: the server's connection header is then the product's choice.
const agent = new Agent({ keepAlive: true, maxSockets: 1 });

sharedByTheFile(
  async () => {
    server = createServer((req, res) => {
      const route = matchProxiedRoute(req.method, req.url);
      assert.ok(route && route !== 'bad-path', `tests send proxied routes only: ${req.url}`);
      const outcome = prepareRequest(req, res, route, 'req-1', deps);
      prepared.push(outcome);
      responses.push(res);
      // A request that passes would be routed next; here it is answered 200 so the client finishes.
      void outcome.then((request) => request && res.end('prepared'));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  },
  () => {
    agent.destroy();
    if (!server) return;
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  },
);

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  /** What prepareRequest returned for this request. */
  request: ProxiedRequest | undefined;
}

const AZURE_CHAT = `/openai/deployments/${POOL}/chat/completions?api-version=2024-10-21`;
const chatBody = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ messages: [{ role: 'user', content: 'Hello there!' }], ...extra });

/**
 * POSTs with node:http (its response headers are the server's as sent, connection included). With
 * `body: undefined` only the head is sent, as a client whose body the server need not wait for.
 */
function post(path: string, body: string | Buffer | undefined, headers: OutgoingHttpHeaders = { 'api-key': CLIENT_KEY }): Promise<Reply> {
  const index = prepared.length;
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path, headers, agent, timeout: 5000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        const outcome = prepared[index];
        assert.ok(outcome, 'the server saw the request');
        outcome.then((request) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, request }), reject);
        req.destroy();
      });
    });
    req.on('timeout', () => req.destroy(new Error('no answer in 5 s')));
    // The server may answer before it read the body and close: the response still counts.
    req.on('error', (error: NodeJS.ErrnoException) => (error.code === 'EPIPE' || error.code === 'ECONNRESET' ? undefined : reject(error)));
    if (body === undefined) req.flushHeaders();
    else req.end(body);
  });
}

function azureError(reply: Reply, status: number, code: string): string {
  assert.equal(reply.status, status, reply.body);
  assert.match(String(reply.headers['content-type']), /^application\/json/);
  const parsed = JSON.parse(reply.body) as { error: { code: string; message: string } };
  assert.deepEqual(Object.keys(parsed), ['error']);
  assert.deepEqual(Object.keys(parsed.error).sort(), ['code', 'message']);
  assert.equal(parsed.error.code, code);
  assert.equal(reply.request, undefined, 'a refused request is not routed');
  return parsed.error.message;
}

const JSON_HEADERS = { 'api-key': CLIENT_KEY, 'content-type': 'application/json' };

describe('prepareRequest refuses', () => {
  test('401 without a key or with a wrong one, before the body is looked at', async () => {
    azureError(await post(AZURE_CHAT, chatBody(), { 'content-type': 'application/json' }), 401, '401');
    azureError(await post(AZURE_CHAT, 'not json', { 'api-key': 'wrong-key-1234' }), 401, '401');
    azureError(await post(AZURE_CHAT, chatBody(), { authorization: 'Bearer ' }), 401, '401');
  });

  test('400 for an empty body, bad JSON, a JSON array or scalar', async () => {
    assert.match(azureError(await post(AZURE_CHAT, ''), 400, 'invalid_request_error'), /empty/);
    assert.match(azureError(await post(AZURE_CHAT, '{"messages": ['), 400, 'invalid_request_error'), /not valid JSON/);
    for (const body of ['[{"model":"x"}]', '42', 'null', '"text"']) {
      assert.match(azureError(await post(AZURE_CHAT, body), 400, 'invalid_request_error'), /JSON object/, body);
    }
  });

  test('400 when an OpenAI-style request names no model', async () => {
    for (const extra of [{}, { model: '' }, { model: 42 }]) {
      const message = azureError(await post('/openai/v1/chat/completions', chatBody(extra), JSON_HEADERS), 400, 'invalid_request_error');
      assert.match(message, /model/, JSON.stringify(extra));
    }
  });

  test('404 DeploymentNotFound for a pool this gateway does not have, on both route styles', async () => {
    const azure = azureError(
      await post('/openai/deployments/no-such-pool/chat/completions', chatBody(), JSON_HEADERS),
      404,
      'DeploymentNotFound',
    );
    assert.match(azure, /"no-such-pool"/);
    azureError(await post('/v1/chat/completions', chatBody({ model: 'no-such-model' }), JSON_HEADERS), 404, 'DeploymentNotFound');
    // The path's pool wins over the body's model in Azure style.
    azureError(
      await post('/openai/deployments/no-such-pool/chat/completions', chatBody({ model: POOL }), JSON_HEADERS),
      404,
      'DeploymentNotFound',
    );
  });

  test('413 with connection: close for a body over maxBodyBytes, declared or chunked', async () => {
    const declared = await post(AZURE_CHAT, undefined, { ...JSON_HEADERS, 'content-length': String(MAX_BODY + 1) });
    assert.match(azureError(declared, 413, 'RequestEntityTooLarge'), new RegExp(String(MAX_BODY)));
    assert.equal(declared.headers.connection, 'close', 'the unread rest of the body cannot be followed by another request');
    const chunked = await post(AZURE_CHAT, chatBody({ padding: 'x'.repeat(MAX_BODY) }), {
      ...JSON_HEADERS,
      'transfer-encoding': 'chunked',
    });
    azureError(chunked, 413, 'RequestEntityTooLarge');
    assert.equal(chunked.headers.connection, 'close');
  });

  test('408 with connection: close when the body does not arrive within bodyTimeoutMs', async () => {
    const reply = await post(AZURE_CHAT, undefined, { ...JSON_HEADERS, 'content-length': '100' });
    azureError(reply, 408, 'RequestTimeout');
    assert.equal(reply.headers.connection, 'close');
  });

  test('415 for a Content-Encoding the gateway cannot decode; 400 for one it cannot inflate', async () => {
    azureError(await post(AZURE_CHAT, chatBody(), { ...JSON_HEADERS, 'content-encoding': 'zstd' }), 415, 'UnsupportedMediaType');
    const corrupt = await post(AZURE_CHAT, 'not gzip', { ...JSON_HEADERS, 'content-encoding': 'gzip' });
    assert.match(azureError(corrupt, 400, 'invalid_request_error'), /could not be decoded/);
  });

  test('a client that disconnects mid-body gets nothing and nothing is routed', async () => {
    const index = prepared.length;
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => {});
    socket.write(`POST ${AZURE_CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\napi-key: ${CLIENT_KEY}\r\nContent-Length: 1000\r\n\r\n{"messages":`);
    let answered = false;
    socket.on('data', () => (answered = true));
    await sleep(50);
    socket.destroy();
    const outcome = prepared[index];
    assert.ok(outcome, 'the server saw the request');
    assert.equal(await outcome, undefined);
    assert.equal(answered, false);
    assert.equal(responses[index]?.headersSent, false, 'no answer is written to a connection that is gone');
  });
});

describe('prepareRequest passes', () => {
  test('an Azure-style chat: its pool, operation, apiVersion, client, body bytes and a positive estimate', async () => {
    const body = chatBody({ max_tokens: 50 });
    const reply = await post(AZURE_CHAT, body, JSON_HEADERS);
    assert.equal(reply.status, 200);
    const request = reply.request!;
    assert.equal(request.pool.name, POOL);
    assert.equal(request.operation, 'chat/completions');
    assert.equal(request.apiVersion, '2024-10-21');
    assert.equal(request.requestId, 'req-1');
    assert.deepEqual(request.client, { name: 'team-a', tpm: 5000, rpm: undefined });
    assert.equal(request.body.toString(), body, 'the client’s bytes, unchanged');
    assert.equal(request.stream, false);
    assert.equal(request.bodyWithUsage, undefined, 'not a stream: nothing to ask for');
    // The estimate covers the prompt and the 50 output tokens asked for.
    assert.ok(request.estimatedTokens > 50, `estimate ${request.estimatedTokens}`);
    assert.ok(Math.abs(request.startedAt - Date.now()) < 5000);
  });

  test('an OpenAI-style request takes its pool from model and has no apiVersion; a gzip body is read inflated', async () => {
    const body = chatBody({ model: POOL });
    const reply = await post('/openai/v1/chat/completions', gzipSync(body), { ...JSON_HEADERS, 'content-encoding': 'gzip' });
    assert.equal(reply.status, 200);
    assert.equal(reply.request?.pool.name, POOL);
    assert.equal(reply.request?.apiVersion, undefined);
    assert.equal(reply.request?.body.toString(), body);
  });

  test('a stream without include_usage gets a bodyWithUsage that asks for it, keeping every other field', async () => {
    const reply = await post(AZURE_CHAT, chatBody({ stream: true, stream_options: { other: 1 }, temperature: 0.5 }), JSON_HEADERS);
    const request = reply.request!;
    assert.equal(request.stream, true);
    const withUsage = JSON.parse(request.bodyWithUsage!.toString()) as Record<string, unknown>;
    assert.deepEqual(withUsage, { ...(JSON.parse(request.body.toString()) as object), stream_options: { other: 1, include_usage: true } });
  });

  test('a stream that asks for usage itself, or a non-stream, is sent as is', async () => {
    for (const extra of [{ stream: true, stream_options: { include_usage: true } }, { stream: false }, { stream: 'yes' }]) {
      const request = (await post(AZURE_CHAT, chatBody(extra), JSON_HEADERS)).request!;
      assert.equal(request.bodyWithUsage, undefined, JSON.stringify(extra));
      assert.equal(request.stream, extra.stream === true);
    }
  });

  test('embeddings never get a bodyWithUsage, even with stream: true', async () => {
    const path = `/openai/deployments/${EMBEDDINGS}/embeddings?api-version=2024-10-21`;
    const request = (await post(path, JSON.stringify({ input: 'some text to embed', stream: true }), JSON_HEADERS)).request!;
    assert.equal(request.operation, 'embeddings');
    assert.equal(request.pool.name, EMBEDDINGS);
    assert.equal(request.bodyWithUsage, undefined);
    assert.ok(request.estimatedTokens > 0);
  });
});

describe('a request no deployment could ever admit', () => {
  const budgeted = `/openai/deployments/${BUDGETED}/chat/completions?api-version=2024-10-21`;

  test('is a 400 naming the largest budget, not a 429 to retry forever', async () => {
    const reply = await post(budgeted, chatBody({ max_tokens: 5000 }));
    const message = azureError(reply, 400, 'TokensExceedBudget');
    assert.match(message, new RegExp(`about 50\\d\\d tokens .* pool ${BUDGETED} \\(2000 tokens per minute\\)`));
  });

  test('one that fits the largest deployment passes, and a pool with an unbudgeted deployment takes any size', async () => {
    assert.equal((await post(budgeted, chatBody({ max_tokens: 1900 }))).status, 200);
    assert.equal((await post(AZURE_CHAT, chatBody({ max_tokens: 500_000 }))).status, 200);
  });

  test('a Responses follow-up is measured against the budget of its own resource', async () => {
    const onSmall = encodeId('resp_abc', resourceTagOf(NOWHERE));
    const body = JSON.stringify({ model: BUDGETED, input: 'hi', max_output_tokens: 1500, previous_response_id: onSmall });
    const message = azureError(await post('/openai/v1/responses', body), 400, 'TokensExceedBudget');
    assert.match(message, /\(1000 tokens per minute\)/);
    const free = JSON.stringify({ model: BUDGETED, input: 'hi', max_output_tokens: 1500 });
    assert.equal((await post('/openai/v1/responses', free)).status, 200);
  });
});
