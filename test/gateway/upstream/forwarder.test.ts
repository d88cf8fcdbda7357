import assert from 'node:assert/strict';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { after, afterEach, before, describe, test } from 'node:test';
import { Forwarder, type AttemptOutcome, type AttemptSpec } from '../../../gateway/upstream/forwarder.ts';
import { readLimited } from '../../../gateway/upstream/response-pipe.ts';
import { sleep, until } from '../../helpers/fixtures.ts';
import { closedPort, readAll, send, serve, type LocalServer } from '../../helpers/local-http.ts';

/** One request as the upstream server received it. */
interface Seen {
  method: string | undefined;
  url: string | undefined;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Set when the connection closed before the upstream answered. */
  closedEarly: boolean;
  /** The gateway's side of the connection: the same port twice means the connection was reused. */
  remotePort: number | undefined;
}

describe('Forwarder.attempt', () => {
  let forwarder: Forwarder;
  let upstream: LocalServer;
  let gateway: LocalServer;
  const seen: Seen[] = [];
  /** How the upstream answers, per test. */
  let answer: (req: IncomingMessage, res: ServerResponse, seen: Seen) => void;
  /** What the gateway's handler does with the client's request, per test. */
  let handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
  const target = () => new URL(upstream.url);
  const spec = (overrides: Partial<AttemptSpec> = {}): AttemptSpec => ({
    target: target(),
    path: '/openai/deployments/east/chat/completions?api-version=2024-10-21',
    body: Buffer.from('{}'),
    headers: { 'api-key': 'deployment-key', 'x-request-id': 'req-1' },
    headersTimeoutMs: 2000,
    ...overrides,
  });

  before(async () => {
    forwarder = new Forwarder();
    upstream = await serve((req, res) => {
      void readAll(req).then((body) => {
        const record: Seen = {
          method: req.method,
          url: req.url,
          headers: req.headers,
          body,
          closedEarly: false,
          remotePort: req.socket.remotePort,
        };
        seen.push(record);
        res.once('close', () => (record.closedEarly = !res.writableFinished));
        answer(req, res, record);
      });
    });
    gateway = await serve((req, res) => {
      handle(req, res).catch((error: Error) => {
        if (!res.headersSent) res.writeHead(599).end(error.message);
      });
    });
  });
  afterEach(() => {
    seen.length = 0;
  });
  after(async () => {
    forwarder.close();
    await gateway.close();
    await upstream.close();
  });

  test('sends the path and query, the body byte for byte on every attempt, framed by its own length', async () => {
    // Bytes that would not survive a text round trip, in three chunks of a chunked client body.
    const client = [Buffer.from('{"content":"héllo'), Buffer.from([0x00, 0xff, 0xfe]), Buffer.from(' 世界"}')];
    const body = Buffer.concat(client);
    answer = (req, res) => res.writeHead(req.url?.startsWith('/first') ? 503 : 200).end('answer');
    const statuses: number[] = [];
    handle = async (req, res) => {
      const received = await readAll(req);
      const first = await forwarder.attempt(req, res, spec({ path: '/first?api-version=2024-06-01&x=1', body: received }));
      assert.equal(first.kind, 'response');
      statuses.push(first.response.statusCode!);
      await readLimited(first.response, 1024);
      const second = await forwarder.attempt(req, res, spec({ path: '/second/chat?api-version=2024-10-21', body: received }));
      assert.equal(second.kind, 'response');
      statuses.push(second.response.statusCode!);
      res.writeHead(second.response.statusCode!);
      second.response.pipe(res);
    };
    const response = await send(gateway.url, { path: '/client/path?api-version=1', body: client });
    assert.equal(response.status, 200);
    assert.deepEqual(statuses, [503, 200]);
    assert.deepEqual(
      seen.map((s) => [s.method, s.url]),
      [
        ['POST', '/first?api-version=2024-06-01&x=1'],
        ['POST', '/second/chat?api-version=2024-10-21'],
      ],
      "the spec's path, not the client's",
    );
    for (const [index, request] of seen.entries()) {
      assert.deepEqual(request.body, body, `attempt ${index + 1} carries the same bytes`);
      assert.equal(request.headers['content-length'], String(body.length), `attempt ${index + 1}`);
      assert.equal(request.headers['transfer-encoding'], undefined, 'not chunked, although the client was');
    }
  });

  test("the body sent is the spec's, with its own length, not the client's", async () => {
    answer = (_req, res) => res.end('ok');
    const rewritten = Buffer.from('{"stream":true,"stream_options":{"include_usage":true}}');
    handle = async (req, res) => {
      await readAll(req);
      const outcome = await forwarder.attempt(req, res, spec({ body: rewritten }));
      assert.equal(outcome.kind, 'response');
      outcome.response.pipe(res);
    };
    const response = await send(gateway.url, { body: Buffer.from('{"stream":true}') });
    assert.equal(response.status, 200);
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.headers['content-length'], String(rewritten.length));
    assert.deepEqual(seen[0]!.body, rewritten);
  });

  test("the client's credentials, forwarding and framing headers stay behind; the spec's are sent", async () => {
    answer = (_req, res) => res.end('ok');
    handle = async (req, res) => {
      const outcome = await forwarder.attempt(req, res, spec({ body: await readAll(req) }));
      assert.equal(outcome.kind, 'response');
      outcome.response.pipe(res);
    };
    await send(gateway.url, {
      body: Buffer.from('{"messages":[]}'),
      headers: {
        'content-type': 'application/json',
        'api-key': 'client-key',
        authorization: 'Bearer client-key',
        cookie: 'session=client',
        forwarded: 'for=10.0.0.1',
        'x-forwarded-for': '10.0.0.1',
        'x-forwarded-host': 'gateway.example.com',
        'x-forwarded-proto': 'https',
        'proxy-authorization': 'Basic Y2xpZW50',
        'content-encoding': 'gzip',
        'accept-encoding': 'gzip, br',
        'x-request-id': 'client-trace',
        'x-ms-client-request-id': 'client-corr',
      },
    });
    assert.equal(seen.length, 1);
    const headers = seen[0]!.headers;
    assert.equal(headers['api-key'], 'deployment-key', "the deployment's own key");
    assert.equal(headers['x-request-id'], 'req-1');
    for (const name of [
      'authorization',
      'cookie',
      'forwarded',
      'x-forwarded-for',
      'x-forwarded-host',
      'x-forwarded-proto',
      'proxy-authorization',
      'content-encoding',
    ]) {
      assert.equal(headers[name], undefined, `${name} is not sent upstream`);
    }
    assert.equal(headers['accept-encoding'], 'identity', 'usage is read from the answer: no compression');
    assert.equal(headers.host, `127.0.0.1:${upstream.port}`, "the deployment's host, not the gateway's");
    assert.equal(headers['content-type'], 'application/json', 'other client headers pass');
    assert.equal(headers['x-ms-client-request-id'], 'client-corr');
    assert.ok(!JSON.stringify(headers).includes('client-key'), 'the client key appears nowhere upstream');
  });

  test('resolves with the response and its status before any byte reaches the client', async () => {
    answer = (_req, res) => res.writeHead(503, { 'x-upstream': 'yes', 'retry-after': '1' }).end('upstream body');
    let clientSawNothing: boolean | undefined;
    handle = async (req, res) => {
      const outcome = await forwarder.attempt(req, res, spec({ body: await readAll(req) }));
      assert.equal(outcome.kind, 'response');
      assert.equal(outcome.response.statusCode, 503);
      assert.equal(outcome.response.headers['x-upstream'], 'yes');
      assert.equal(outcome.upstreamRequest.destroyed, false);
      // Nothing was written for us: the caller may still fail over, or answer as it likes.
      await sleep(50);
      clientSawNothing = !res.headersSent;
      assert.equal((await readLimited(outcome.response, 1024)).toString(), 'upstream body');
      res.writeHead(200, { 'content-type': 'text/plain' }).end('from the caller');
    };
    const response = await send(gateway.url, { body: Buffer.from('{}') });
    assert.equal(clientSawNothing, true);
    assert.equal(response.status, 200);
    assert.equal(response.headers['x-upstream'], undefined);
    assert.equal(response.body.toString(), 'from the caller');
  });

  test('a refused connection is an error, not a timeout, and leaves the client response to the caller', async () => {
    const port = await closedPort();
    let outcome: AttemptOutcome | undefined;
    handle = async (req, res) => {
      outcome = await forwarder.attempt(req, res, spec({ target: new URL(`http://127.0.0.1:${port}`), body: await readAll(req) }));
      assert.equal(res.headersSent, false);
      res.writeHead(502).end('no deployment');
    };
    const response = await send(gateway.url, { body: Buffer.from('{}') });
    assert.equal(outcome?.kind, 'error');
    assert.equal(outcome.error.code, 'ECONNREFUSED');
    assert.equal(outcome.timedOut, false);
    assert.equal(response.status, 502);
    assert.equal(response.body.toString(), 'no deployment');
  });

  test('an upstream that sends no headers within headersTimeoutMs times out, and its request is destroyed', async () => {
    answer = () => undefined; // accepts the request, never answers
    let outcome: AttemptOutcome | undefined;
    let waitedMs = 0;
    handle = async (req, res) => {
      const started = Date.now();
      outcome = await forwarder.attempt(req, res, spec({ body: await readAll(req), headersTimeoutMs: 150 }));
      waitedMs = Date.now() - started;
      res.writeHead(504).end();
    };
    const response = await send(gateway.url, { body: Buffer.from('{}') });
    assert.equal(response.status, 504);
    assert.equal(outcome?.kind, 'error');
    assert.equal(outcome.timedOut, true);
    assert.equal(outcome.error.code, 'ETIMEDOUT');
    assert.ok(waitedMs >= 140 && waitedMs < 1500, `gave up after ${waitedMs} ms`);
    await until(() => seen[0]?.closedEarly === true, 2000, 'the upstream to see its request closed');
  });

  test('a late answer to a timed-out attempt does not disturb the next attempt', async () => {
    // The first attempt's answer comes after its timeout, while the second attempt is still waiting for its own.
    answer = (req, res) => {
      const late = req.url === '/slow';
      setTimeout(() => res.writeHead(late ? 500 : 200).end(late ? 'late' : 'second'), late ? 250 : 300).unref();
    };
    const outcomes: AttemptOutcome[] = [];
    handle = async (req, res) => {
      const body = await readAll(req);
      outcomes.push(await forwarder.attempt(req, res, spec({ path: '/slow', body, headersTimeoutMs: 100 })));
      const second = await forwarder.attempt(req, res, spec({ path: '/next', body }));
      outcomes.push(second);
      if (second.kind !== 'response') return void res.writeHead(502).end();
      res.writeHead(second.response.statusCode!);
      second.response.pipe(res);
    };
    const response = await send(gateway.url, { body: Buffer.from('{}') });
    assert.deepEqual(
      outcomes.map((o) => (o.kind === 'error' ? `error timedOut=${o.timedOut}` : `response ${o.response.statusCode}`)),
      ['error timedOut=true', 'response 200'],
    );
    assert.equal(response.status, 200);
    assert.equal(response.complete, true);
    assert.equal(response.body.toString(), 'second');
    assert.equal(seen.find((s) => s.url === '/slow')?.closedEarly, true, 'the timed-out request was closed, its answer never read');
  });

  /** Two client requests in a row through the forwarder; the upstream ports they arrived from. */
  async function twoRequests(headers: Record<string, string>, chunked: boolean): Promise<(number | undefined)[]> {
    answer = (_req, res) => res.end('ok');
    handle = async (req, res) => {
      const outcome = await forwarder.attempt(req, res, spec({ body: await readAll(req) }));
      assert.equal(outcome.kind, 'response');
      outcome.response.pipe(res);
    };
    const body = chunked ? [Buffer.from('{"a":'), Buffer.from('1}')] : Buffer.from('{"a":1}');
    for (let i = 0; i < 2; i++) assert.equal((await send(gateway.url, { body, headers })).status, 200);
    return seen.map((s) => s.remotePort);
  }

  test('sequential attempts reuse one upstream connection', async () => {
    const [first, second] = await twoRequests({ connection: 'keep-alive' }, false);
    assert.equal(second, first);
  });

  // `connection` is hop-by-hop: a client's `Connection: close` once reached the deployment (httpxy
  // copies the client's headers), closing the pooled upstream connection after each such request,
  // a new TLS handshake to Azure per request.
  test("a client's Connection: close does not close the upstream connection", async () => {
    const [first, second] = await twoRequests({ connection: 'close, x-hop', 'x-hop': 'one hop only' }, false);
    // No Connection header is HTTP/1.1's keep-alive; what the client's named as hop-by-hop goes too.
    assert.notEqual(seen[0]?.headers.connection, 'close');
    assert.equal(seen[0]?.headers['x-hop'], undefined);
    assert.equal(second, first);
  });

  // Same cost, other cause: for a client body with transfer-encoding, httpxy sets `connection: close`
  // on the upstream request (forceConnectionCloseForTransferEncoding); the body goes with a
  // content-length, so there is no reason to close.
  test('a chunked client body does not close the upstream connection', async () => {
    const [first, second] = await twoRequests({ connection: 'keep-alive' }, true);
    assert.notEqual(seen[0]?.headers.connection, 'close');
    assert.equal(second, first);
  });
});
