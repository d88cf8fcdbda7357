/**
 * The listener's connection hygiene over real sockets on 127.0.0.1: header and request timeouts,
 * keep-alive, maxConnections, and the Azure-shaped answers to what Node's parser refuses. A bare
 * Listener with short timeouts from a validated config; its handlers answer, stream, hold or read a
 * body, so that every refusal seen here is the listener's own.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ConfigError, parseConfig } from '../../../shared/config/load.ts';
import { Listener } from '../../../gateway/http/listener.ts';
import { Metrics } from '../../../gateway/metrics.ts';
import { memoryLogger, NOWHERE, type LogLine } from '../../helpers/collaborators.ts';
import { sleep, until } from '../../helpers/fixtures.ts';
import { testConfig } from '../../helpers/gateway.ts';
import { readAll, send } from '../../helpers/local-http.ts';

const HEADERS_TIMEOUT_MS = 300;
const REQUEST_TIMEOUT_MS = 700;
const KEEP_ALIVE_TIMEOUT_MS = 1000;
/** Node closes an idle keep-alive connection this much after keepAliveTimeoutMs (the listener's KEEP_ALIVE_TIMEOUT_BUFFER_MS). */
const KEEP_ALIVE_BUFFER_MS = 1000;
const SECRET = 'header-value-never-logged';

interface Running {
  port: number;
  url: string;
  server: Server;
  lines: LogLine[];
  metrics: Metrics;
  /** Responses of GET /hold, waiting for release(). */
  held: ServerResponse[];
  close(): Promise<void>;
}

async function startListener(gateway: Record<string, unknown> = {}): Promise<Running> {
  const config = testConfig({
    pools: { p: { deployments: [{ id: 'd', endpoint: NOWHERE }] } },
    gateway: {
      headersTimeoutMs: HEADERS_TIMEOUT_MS,
      bodyTimeoutMs: 300,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      keepAliveTimeoutMs: KEEP_ALIVE_TIMEOUT_MS,
      ...gateway,
    },
  });
  const metrics = new Metrics(false);
  const { logger, lines } = memoryLogger();
  const held: ServerResponse[] = [];
  // A proxied request: its body is read whole, however long that takes (the listener's limits only).
  const proxied = async (req: IncomingMessage, res: ServerResponse) => {
    const body = await readAll(req).catch(() => undefined);
    if (body) res.end(`read ${body.length}`);
  };
  const fallback = (req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/hold') return void held.push(res);
    if (req.url === '/stream') {
      // Longer than requestTimeoutMs: the request arrived, the response takes its time.
      res.write('a');
      for (const [index, chunk] of ['b', 'c', 'd'].entries())
        setTimeout(() => (index === 2 ? res.end(chunk) : res.write(chunk)), 500 * (index + 1));
      return;
    }
    res.end('ok');
  };
  const listener = new Listener(proxied, fallback, logger, { settings: config.gateway, metrics });
  const { server, url } = await listener.listen(0, '127.0.0.1');
  return { port: Number(new URL(url).port), url, server, lines, metrics, held, close: () => listener.close() };
}

/** A raw TCP client: what the server sent, byte for byte, and when it closed the connection. */
interface Raw {
  socket: Socket;
  received(): string;
  /** Resolves with the ms from `since` until the server ended or closed the connection; rejects after timeoutMs. */
  closed(since: number, timeoutMs?: number): Promise<number>;
}

function raw(port: number, data?: string): Raw {
  const socket = connect(port, '127.0.0.1');
  let text = '';
  let endedAt: number | undefined;
  socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
  socket.on('error', () => (endedAt ??= Date.now()));
  socket.on('end', () => (endedAt ??= Date.now()));
  socket.on('close', () => (endedAt ??= Date.now()));
  if (data !== undefined) socket.write(data);
  return {
    socket,
    received: () => text,
    async closed(since, timeoutMs = 5000) {
      await until(() => endedAt !== undefined, timeoutMs, 'the server to close the connection');
      return endedAt! - since;
    },
  };
}

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Every complete response in what a raw client received (each framed by its content-length). */
function responses(text: string): RawResponse[] {
  const found: RawResponse[] = [];
  let rest = text;
  while (rest.includes('\r\n\r\n')) {
    const headEnd = rest.indexOf('\r\n\r\n');
    const [statusLine, ...headerLines] = rest.slice(0, headEnd).split('\r\n');
    const headers = Object.fromEntries(
      headerLines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]),
    );
    const length = Number(headers['content-length'] ?? 0);
    found.push({ status: Number(statusLine?.split(' ')[1]), headers, body: rest.slice(headEnd + 4, headEnd + 4 + length) });
    rest = rest.slice(headEnd + 4 + length);
  }
  return found;
}

/** Asserts an Azure-shaped error with connection: close and a request id; returns its message. */
function azureError(response: RawResponse | undefined, status: number, code: string): string {
  assert.ok(response, 'an answer came');
  assert.equal(response.status, status, JSON.stringify(response));
  assert.match(response.headers['content-type'] ?? '', /^application\/json/);
  assert.equal(response.headers.connection, 'close');
  assert.ok(response.headers['x-request-id'], 'the answer carries a request id');
  const parsed = JSON.parse(response.body) as { error: { code: string; message: string } };
  assert.deepEqual(Object.keys(parsed), ['error']);
  assert.deepEqual(Object.keys(parsed.error).sort(), ['code', 'message']);
  assert.equal(parsed.error.code, code);
  return parsed.error.message;
}

async function refused(metrics: Metrics, reason: string): Promise<number> {
  const { values } = await metrics.connectionsRefused.get();
  return values.find((value) => value.labels.reason === reason)?.value ?? 0;
}

function refusalLines(lines: LogLine[]): LogLine[] {
  return lines.filter((line) => line.message === 'request refused by the listener');
}

describe('connection settings in the config', () => {
  const yaml = (gateway: string) =>
    `gateway:\n${gateway}\npools:\n  p:\n    deployments:\n      - { id: a, endpoint: https://a.example.com, deployment: d, apiKey: k }\n`;

  test('defaults a production gateway runs with', () => {
    const { gateway } = parseConfig(yaml('  maxAttempts: 3'), {});
    assert.equal(gateway.headersTimeoutMs, 10_000);
    assert.equal(gateway.requestTimeoutMs, 60_000);
    assert.equal(gateway.keepAliveTimeoutMs, 65_000, 'above nginx’s and ALB’s 60 s');
    assert.equal(gateway.maxConnections, 10_000);
  });

  test('a requestTimeoutMs that would cut a body before bodyTimeoutMs is refused, naming the field; so are non-positive values', () => {
    assert.throws(
      () => parseConfig(yaml('  headersTimeoutMs: 10000\n  bodyTimeoutMs: 30000\n  requestTimeoutMs: 35000'), {}),
      (error: ConfigError) =>
        error.problems.includes('gateway.requestTimeoutMs: must be at least headersTimeoutMs + bodyTimeoutMs (40000)'),
    );
    for (const field of ['headersTimeoutMs', 'keepAliveTimeoutMs', 'maxConnections']) {
      assert.throws(
        () => parseConfig(yaml(`  ${field}: 0`), {}),
        (error: ConfigError) => error.problems.some((problem) => problem.startsWith(`gateway.${field}: `)),
        field,
      );
    }
  });
});

describe('Listener: timeouts', () => {
  let running: Running;
  before(async () => (running = await startListener()));
  after(() => running.close());

  test('half a header block, then silence: cut after headersTimeoutMs with an Azure-shaped 408, logged without header values', async () => {
    const started = Date.now();
    const client = raw(running.port, `GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\napi-key: ${SECRET}\r\nx-half: ${SECRET}`);
    const ms = await client.closed(started);
    const [answer, ...more] = responses(client.received());
    assert.match(azureError(answer, 408, 'RequestTimeout'), new RegExp(`headers did not arrive within .* ${HEADERS_TIMEOUT_MS} ms`));
    assert.equal(more.length, 0);
    assert.ok(ms >= HEADERS_TIMEOUT_MS * 0.8 && ms < 4000, `closed after ${ms} ms`);
    const [line] = refusalLines(running.lines);
    assert.equal(line?.status, 408);
    assert.equal(line?.reason, 'headers-timeout');
    assert.equal(line?.requestId, answer?.headers['x-request-id'], 'the log line names the answer it gave');
    assert.ok(!JSON.stringify(running.lines).includes(SECRET), 'no header value is logged');
    assert.equal(await refused(running.metrics, 'headers-timeout'), 1);
  });

  test('a new connection that sends nothing gets the same 408 after headersTimeoutMs', async () => {
    const started = Date.now();
    const client = raw(running.port);
    const ms = await client.closed(started);
    assert.match(azureError(responses(client.received())[0], 408, 'RequestTimeout'), /headers/);
    assert.ok(ms >= HEADERS_TIMEOUT_MS * 0.8 && ms < 4000, `closed after ${ms} ms`);
  });

  test('a body still arriving at requestTimeoutMs gets an Azure-shaped 408 for the whole request', async () => {
    const path = '/openai/deployments/p/chat/completions';
    const client = raw(running.port, `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-length: 100\r\n\r\n{"messages":`);
    await client.closed(Date.now());
    assert.match(
      azureError(responses(client.received())[0], 408, 'RequestTimeout'),
      new RegExp(`did not arrive whole .* ${REQUEST_TIMEOUT_MS} ms`),
    );
    assert.equal(refusalLines(running.lines).at(-1)?.reason, 'request-timeout');
  });

  test('requestTimeoutMs ends when the request has arrived: a response streaming for longer is not cut', async () => {
    const started = Date.now();
    const reply = await send(running.url, { method: 'GET', path: '/stream', timeoutMs: 5000 });
    assert.equal(reply.status, 200);
    assert.equal(reply.body.toString(), 'abcd');
    assert.equal(reply.complete, true);
    assert.ok(Date.now() - started > REQUEST_TIMEOUT_MS, 'the stream outlasted requestTimeoutMs');
  });

  test('keep-alive: the idle time between requests is not a header timeout; an idle connection closes after keepAliveTimeoutMs, silently', async () => {
    const request = 'GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
    const client = raw(running.port, request);
    await until(() => responses(client.received()).length === 1, 3000, 'the first response');
    // Idle for more than headersTimeoutMs, less than keepAliveTimeoutMs: the same connection serves the next request.
    await sleep(HEADERS_TIMEOUT_MS * 2);
    client.socket.write(request);
    await until(() => responses(client.received()).length === 2, 3000, 'the second response');
    const idleSince = Date.now();
    const ms = await client.closed(idleSince, KEEP_ALIVE_TIMEOUT_MS + KEEP_ALIVE_BUFFER_MS + 4000);
    assert.deepEqual(
      responses(client.received()).map((response) => [response.status, response.body]),
      [
        [200, 'ok'],
        [200, 'ok'],
      ],
      'nothing but the two answers: no 408 on an idle connection',
    );
    assert.ok(ms >= KEEP_ALIVE_TIMEOUT_MS * 0.9, `closed after ${ms} ms idle, before keepAliveTimeoutMs`);
  });
});

describe('Listener: what Node’s parser refuses is answered Azure-shaped', () => {
  let running: Running;
  before(async () => (running = await startListener()));
  after(() => running.close());

  test('headers over Node’s limit: 431 to Node’s fetch, logged without the header', async () => {
    const response = await fetch(`${running.url}/ok`, { headers: { 'x-large': `${SECRET}-${'a'.repeat(20_000)}` } });
    const body = await response.text();
    assert.equal(response.status, 431, body);
    assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(response.headers.get('connection'), 'close');
    assert.ok(response.headers.get('x-request-id'));
    const parsed = JSON.parse(body) as { error: { code: string; message: string } };
    assert.equal(parsed.error.code, 'RequestHeaderFieldsTooLarge');
    assert.match(parsed.error.message, /16384 bytes/);
    await until(() => refusalLines(running.lines).length > 0, 2000, 'the log line');
    assert.equal(refusalLines(running.lines)[0]?.reason, 'headers-too-large');
    assert.ok(!JSON.stringify(running.lines).includes(SECRET));
    assert.equal(await refused(running.metrics, 'headers-too-large'), 1);
  });

  test('headers far over the limit, to a client that reads only once it has sent them: still its 431 (lingering close)', async () => {
    const client = connect(running.port, '127.0.0.1');
    client.pause();
    let text = '';
    client.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
    client.on('error', () => undefined);
    const closed = new Promise((resolve) => client.once('close', resolve));
    client.write(`GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nx-large: ${'a'.repeat(4 * 1024 * 1024)}\r\n\r\n`, () => client.resume());
    const timer = setTimeout(() => client.destroy(), 5000);
    await closed;
    clearTimeout(timer);
    azureError(responses(text)[0], 431, 'RequestHeaderFieldsTooLarge');
  });

  test('a request that is not HTTP: 400 invalid_request_error', async () => {
    const client = raw(running.port, 'HELLO THERE\r\n\r\n');
    await client.closed(Date.now());
    assert.match(azureError(responses(client.received())[0], 400, 'invalid_request_error'), /not valid HTTP/);
    assert.equal(refusalLines(running.lines).at(-1)?.reason, 'malformed');
  });

  test('a reset by the client is nobody to answer: neither logged nor counted', async () => {
    const before = refusalLines(running.lines).length;
    const client = raw(running.port, 'GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nx-half: 1');
    await sleep(50);
    client.socket.resetAndDestroy();
    await sleep(HEADERS_TIMEOUT_MS * 2);
    assert.equal(refusalLines(running.lines).length, before);
  });
});

describe('Listener: maxConnections', () => {
  const MAX = 3;
  let running: Running;
  before(async () => (running = await startListener({ maxConnections: MAX })));
  after(async () => {
    for (const res of running.held) res.end();
    await running.close();
  });

  test('the connection over maxConnections is closed on accept, counted and logged once, while the others are served', async () => {
    const holding = Array.from({ length: MAX }, () => raw(running.port, 'GET /hold HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'));
    await until(() => running.held.length === MAX, 3000, 'the held requests');

    const over = [0, 1, 2].map(() => raw(running.port, 'GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'));
    for (const client of over) await client.closed(Date.now(), 3000);
    for (const client of over) assert.equal(client.received(), '', 'no answer on a connection over the limit');
    await until(async () => (await refused(running.metrics, 'max-connections')) === 3, 2000, 'three drops counted');
    const dropLines = running.lines.filter((line) => line.message === 'connections over maxConnections closed on accept');
    assert.equal(dropLines.length, 1, 'one line for a burst of drops');
    assert.equal(dropLines[0]?.maxConnections, MAX);

    // The connections within the limit were untouched.
    for (const res of running.held.splice(0)) res.end('served');
    for (const client of holding) await until(() => responses(client.received())[0]?.body === 'served', 3000, 'a held response');

    // A connection that closes makes room for a new one.
    holding[0]!.socket.destroy();
    await until(() => new Promise<boolean>((resolve) => running.server.getConnections((_, count) => resolve(count < MAX))), 3000);
    const reply = await send(running.url, { method: 'GET', path: '/ok' });
    assert.equal(reply.status, 200);
    for (const client of holding) client.socket.destroy();
  });
});
