import assert from 'node:assert/strict';
import { createServer, request, type OutgoingHttpHeaders } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { afterEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { BodyError, readRequestBody, type BodyFailure } from '../../../gateway/http/request-body.ts';

type Read = { body: Buffer; failure?: undefined } | { failure: BodyFailure; body?: undefined };

interface BodyServer {
  port: number;
  /** What readRequestBody made of the first request, on the server side. */
  read: Promise<Read>;
}

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
});

/** A real server on 127.0.0.1 that reads each request's body with these limits and answers what it got. */
async function bodyServer(limit: number, timeoutMs: number): Promise<BodyServer> {
  let settle!: (read: Read) => void;
  const read = new Promise<Read>((resolve) => (settle = resolve));
  const server = createServer((req, res) => {
    readRequestBody(req, limit, timeoutMs).then(
      (body) => {
        settle({ body });
        res.end(`read ${body.length}`);
      },
      (error: unknown) => {
        assert.ok(error instanceof BodyError, `a BodyError, not ${String(error)}`);
        settle({ failure: error.failure });
        res.statusCode = 400;
        res.setHeader('connection', 'close');
        res.end(error.failure);
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as AddressInfo).port, read };
}

/** The server's reading, or a failure when it takes longer than `ms` (every wait here is bounded). */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result in ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** POSTs a whole body with node:http; resolves with the response status. */
function post(port: number, body: Buffer, headers: OutgoingHttpHeaders = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/', agent: false, timeout: 5000, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error('no answer in 5 s')));
    req.on('error', reject);
    req.end(body);
  });
}

/** A raw client socket that has sent a POST's head: the test writes the body (or not) byte by byte. */
async function rawPost(port: number, headers: string[]): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  // The server may answer and close while the client still writes: that is the point of several tests.
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.write(`POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`);
  closers.push(async () => void socket.destroy());
  return socket;
}

const LIMIT = 64 * 1024;
const json = (size: number) => Buffer.from(JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(size) }] }));

describe('readRequestBody', () => {
  test('a plain body, in one chunk or many, up to exactly the limit', async () => {
    for (const body of [json(10), json(LIMIT - 100)]) {
      const server = await bodyServer(LIMIT, 5000);
      assert.equal(await post(server.port, body), 200);
      assert.deepEqual((await server.read).body, body);
    }
    const exact = Buffer.alloc(LIMIT, 'a');
    const server = await bodyServer(LIMIT, 5000);
    assert.equal(await post(server.port, exact), 200, 'the limit itself is allowed');
    assert.equal((await server.read).body?.length, LIMIT);
  });

  test('an empty body is an empty buffer', async () => {
    const server = await bodyServer(LIMIT, 5000);
    assert.equal(await post(server.port, Buffer.alloc(0), { 'content-length': '0' }), 200);
    assert.equal((await server.read).body?.length, 0);
  });

  test('gzip, deflate and br bodies are inflated (encoding names in any case)', async () => {
    const body = json(20_000);
    const encoded: [string, Buffer][] = [
      ['gzip', gzipSync(body)],
      ['x-gzip', gzipSync(body)],
      ['GZip', gzipSync(body)],
      ['deflate', deflateSync(body)],
      ['br', brotliCompressSync(body)],
      ['identity', body],
    ];
    for (const [encoding, bytes] of encoded) {
      const server = await bodyServer(LIMIT, 5000);
      assert.equal(await post(server.port, bytes, { 'content-encoding': encoding }), 200, encoding);
      assert.deepEqual((await server.read).body, body, encoding);
    }
  });

  test('a Content-Length above the limit is refused before a byte of the body is read', async () => {
    const server = await bodyServer(LIMIT, 30_000);
    // Only the head is sent: reading would wait for the 30 s timeout, a refusal comes at once.
    await rawPost(server.port, [`Content-Length: ${LIMIT + 1}`]);
    assert.deepEqual(await within(server.read, 3000, 'refusal'), { failure: 'too-large' });
  });

  test('a chunked body is refused as soon as it grows past the limit', async () => {
    const server = await bodyServer(LIMIT, 30_000);
    const socket = await rawPost(server.port, ['Transfer-Encoding: chunked']);
    const chunk = Buffer.alloc(LIMIT / 2, 'a');
    for (let i = 0; i < 3; i++) socket.write(`${chunk.length.toString(16)}\r\n${chunk.toString()}\r\n`);
    // The body never ends (no last chunk): only the size can have stopped the read.
    assert.deepEqual(await within(server.read, 3000, 'refusal'), { failure: 'too-large' });
  });

  test('a compressed body that inflates past the limit is too large', async () => {
    const inflated = Buffer.alloc(LIMIT * 4, 'a');
    for (const [encoding, bytes] of [
      ['gzip', gzipSync(inflated)],
      ['deflate', deflateSync(inflated)],
      ['br', brotliCompressSync(inflated)],
    ] as const) {
      assert.ok(bytes.length < LIMIT, 'within the limit on the wire');
      const server = await bodyServer(LIMIT, 5000);
      assert.equal(await post(server.port, bytes, { 'content-encoding': encoding }), 400);
      assert.deepEqual(await server.read, { failure: 'too-large' }, encoding);
    }
  });

  test('an unknown Content-Encoding is unsupported', async () => {
    for (const encoding of ['compress', 'zstd', 'gzip, br']) {
      const server = await bodyServer(LIMIT, 5000);
      assert.equal(await post(server.port, json(10), { 'content-encoding': encoding }), 400);
      assert.deepEqual(await server.read, { failure: 'unsupported-encoding' }, encoding);
    }
  });

  test('a corrupt gzip, deflate or br body is a bad encoding', async () => {
    const gzip = gzipSync(json(1000));
    const corrupt: [string, Buffer][] = [
      ['gzip', Buffer.from('this is not gzip at all')],
      ['gzip', gzip.subarray(0, gzip.length - 12)],
      ['deflate', Buffer.from('nor deflate')],
      ['br', Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])],
    ];
    for (const [encoding, bytes] of corrupt) {
      const server = await bodyServer(LIMIT, 5000);
      assert.equal(await post(server.port, bytes, { 'content-encoding': encoding }), 400);
      assert.deepEqual(await server.read, { failure: 'bad-encoding' }, `${encoding} of ${bytes.length} bytes`);
    }
  });

  test('a client trickling bytes past the timeout is too slow', async () => {
    const timeoutMs = 300;
    const server = await bodyServer(LIMIT, timeoutMs);
    const started = performance.now();
    const socket = await rawPost(server.port, ['Content-Length: 1000']);
    // A byte every 20 ms keeps the connection busy, never near 1000 bytes within the timeout.
    const trickle = setInterval(() => socket.write('a'), 20);
    try {
      assert.deepEqual(await within(server.read, 5000, 'timeout'), { failure: 'too-slow' });
      assert.ok(performance.now() - started >= timeoutMs - 5, 'not before the timeout');
    } finally {
      clearInterval(trickle);
    }
  });

  test('a client that disconnects mid-body aborts the read', async () => {
    const server = await bodyServer(LIMIT, 30_000);
    const socket = await rawPost(server.port, ['Content-Length: 1000']);
    socket.write('a'.repeat(100));
    await sleep(50);
    socket.destroy();
    assert.deepEqual(await within(server.read, 3000, 'abort'), { failure: 'aborted' });
  });
});
