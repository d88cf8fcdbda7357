import assert from 'node:assert/strict';
import { Agent, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { Forwarder } from '../../../gateway/upstream/forwarder.ts';
import { writeUpstreamHead } from '../../../gateway/upstream/headers.ts';
import { pipeResponse, readLimited, type PipeOptions, type PipeResult } from '../../../gateway/upstream/response-pipe.ts';
import { sleep, until } from '../../helpers/fixtures.ts';
import { send, serve, type LocalServer } from '../../helpers/local-http.ts';

const event = (json: string) => `data: ${json}\n\n`;
const tokenEvent = (content: string) =>
  event(
    `{"choices":[{"delta":{"content":"${content}"},"finish_reason":null,"index":0}],"id":"x","object":"chat.completion.chunk","usage":null}`,
  );
const usageEvent = event(
  '{"choices":[],"id":"x","object":"chat.completion.chunk","usage":{"completion_tokens":2,"prompt_tokens":8,"total_tokens":10}}',
);
const DONE = 'data: [DONE]\n\n';
const sseHead = { 'content-type': 'text/event-stream' };

/** Writes `pieces` one by one, each in its own tick, so the gateway sees them as separate chunks. */
async function writeSlowly(res: ServerResponse, pieces: string[]): Promise<void> {
  for (const piece of pieces) {
    res.write(piece);
    await sleep(5);
  }
}

/** Bounds a wait on the code under test: a hang fails the test instead of the run. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>(
    (_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not settle in ${ms} ms`)), ms)),
  );
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

describe('pipeResponse and readLimited', () => {
  let upstream: LocalServer;
  let gateway: LocalServer;
  const agent = new Agent({ keepAlive: false });
  const forwarder = new Forwarder();
  /** How the upstream answers, per test. */
  let answer: (res: ServerResponse) => void;
  /** True once the upstream's connection closed before its answer ended: the gateway tore it down. */
  let upstreamCut = false;
  /** What the gateway does with the upstream response, per test; its result is the test's to check. */
  let handle: (response: IncomingMessage, res: ServerResponse) => Promise<unknown>;
  let handled: Promise<unknown>;
  /** By default the upstream response comes from a plain request; with the forwarder as in production. */
  let viaForwarder = false;

  function direct(): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => request(upstream.url, { agent }, resolve).once('error', reject).end());
  }

  async function upstreamResponse(req: IncomingMessage, res: ServerResponse): Promise<IncomingMessage> {
    if (!viaForwarder) return direct();
    const outcome = await forwarder.attempt(req, res, {
      target: new URL(upstream.url),
      path: '/',
      body: Buffer.alloc(0),
      headers: {},
      headersTimeoutMs: 2000,
    });
    if (outcome.kind !== 'response') throw outcome.error;
    return outcome.response;
  }

  /** The way the dispatcher serves a response: the upstream head, then the pipe. */
  const piping = (options: Partial<PipeOptions> = {}) =>
    (handle = (response, res) => {
      writeUpstreamHead(res, response.statusCode ?? 502, response.headers, { requestId: 'r', deployment: 'east', attempts: 1 });
      return pipeResponse(response, res, { idleTimeoutMs: 2000, stripUsage: false, ...options });
    });

  before(async () => {
    upstream = await serve((_req, res) => {
      upstreamCut = false;
      res.once('close', () => (upstreamCut = !res.writableFinished));
      answer(res);
    });
    gateway = await serve((req, res) => {
      handled = upstreamResponse(req, res).then((response) => handle(response, res));
      handled.catch(() => res.destroy());
    });
  });
  after(async () => {
    forwarder.close();
    agent.destroy();
    await gateway.close();
    await upstream.close();
  });

  const result = () => within(handled as Promise<PipeResult>, 3000, 'pipeResponse');

  test('a JSON body is piped whole and its usage read from the tail', async () => {
    const body = `{"choices":[{"message":{"content":"${'word '.repeat(2000)}"}}],"usage":{"completion_tokens":20,"prompt_tokens":9,"total_tokens":29}}`;
    answer = (res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      void writeSlowly(res, [body.slice(0, 5000), body.slice(5000)]).then(() => res.end());
    };
    piping();
    const seen = await send(gateway.url);
    assert.equal(seen.status, 200);
    assert.equal(seen.complete, true);
    assert.equal(seen.body.toString(), body);
    assert.deepEqual(await result(), { outcome: 'ok', usage: { promptTokens: 9, completionTokens: 20, totalTokens: 29 } });
  });

  test("a stream is piped as it came, and its usage read from the final chunk's tail", async () => {
    const pieces = [tokenEvent(' Hello'), tokenEvent(' world'), usageEvent, DONE];
    answer = (res) => {
      res.writeHead(200, sseHead);
      void writeSlowly(res, pieces).then(() => res.end());
    };
    piping();
    const seen = await send(gateway.url);
    assert.equal(seen.complete, true);
    assert.equal(seen.body.toString(), pieces.join(''));
    assert.deepEqual(await result(), { outcome: 'ok', usage: { promptTokens: 8, completionTokens: 2, totalTokens: 10 } });
  });

  test('with stripUsage the usage chunk the gateway asked for is taken out, and its usage still returned', async () => {
    answer = (res) => {
      res.writeHead(200, sseHead);
      void writeSlowly(res, [tokenEvent(' Hello'), tokenEvent(' world'), usageEvent, DONE]).then(() => res.end());
    };
    piping({ stripUsage: true });
    const seen = await send(gateway.url);
    assert.equal(seen.complete, true);
    const plain = (content: string) => tokenEvent(content).replace(',"usage":null', '');
    assert.equal(seen.body.toString(), plain(' Hello') + plain(' world') + DONE, 'the client gets what it asked for');
    assert.deepEqual(await result(), { outcome: 'ok', usage: { promptTokens: 8, completionTokens: 2, totalTokens: 10 } });
  });

  test('an upstream reset mid-stream is upstream-broke, and the client sees its connection cut', async () => {
    answer = (res) => {
      res.writeHead(200, sseHead);
      void writeSlowly(res, [tokenEvent(' Hello'), tokenEvent(' world')]).then(() => res.socket?.resetAndDestroy());
    };
    piping();
    const seen = await send(gateway.url, { timeoutMs: 2000 });
    assert.equal(seen.timedOut, false, 'the gateway cut the connection; the client did not have to give up');
    assert.equal(seen.complete, false, 'no clean end: the client knows the answer is cut');
    assert.equal(seen.body.toString(), tokenEvent(' Hello') + tokenEvent(' world'), 'what came before the reset was passed on');
    assert.equal((await result()).outcome, 'upstream-broke');
  });

  test('a JSON body cut short of its content-length is upstream-broke, not ok', async () => {
    answer = (res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '200' });
      res.write('{"choices":[{"message":{"content":"half');
      // An orderly close, not a reset: only the length tells the body is incomplete.
      setTimeout(() => res.socket?.destroy(), 20);
    };
    piping();
    const seen = await send(gateway.url, { timeoutMs: 2000 });
    assert.equal(seen.timedOut, false, 'the gateway cut the connection');
    assert.equal(seen.complete, false);
    const piped = await result();
    assert.equal(piped.outcome, 'upstream-broke');
    assert.equal(piped.usage, undefined);
  });

  test('an upstream silent past idleTimeoutMs is cut: upstream-broke, the client cut too, the upstream closed', async () => {
    answer = (res) => {
      res.writeHead(200, sseHead);
      res.write(tokenEvent(' Hello')); // and nothing more, ever
    };
    piping({ idleTimeoutMs: 150 });
    const started = Date.now();
    const seen = await send(gateway.url, { timeoutMs: 2000 });
    assert.equal(seen.timedOut, false, 'the gateway cut the connection');
    assert.equal(seen.complete, false);
    assert.equal(seen.body.toString(), tokenEvent(' Hello'));
    assert.equal((await result()).outcome, 'upstream-broke');
    assert.ok(Date.now() - started >= 140, 'not before the idle timeout');
    await until(() => upstreamCut, 2000, 'the upstream to see its connection closed');
  });

  test('a stream that keeps sending is not idle, however long it takes', async () => {
    const pieces = Array.from({ length: 8 }, (_, i) => tokenEvent(` t${i}`));
    answer = (res) => {
      res.writeHead(200, sseHead);
      void (async () => {
        for (const piece of pieces) {
          res.write(piece);
          await sleep(40);
        }
        res.end(DONE);
      })();
    };
    // 8 × 40 ms is well past the idle timeout; no single gap is.
    piping({ idleTimeoutMs: 150 });
    const seen = await send(gateway.url);
    assert.equal(seen.complete, true);
    assert.equal(seen.body.toString(), pieces.join('') + DONE);
    assert.equal((await result()).outcome, 'ok');
  });

  test('a client leaving mid-stream is client-closed-mid-response, and the upstream response is torn down', async () => {
    // Through the forwarder, as in production: the proxy ties the upstream response to the client's.
    viaForwarder = true;
    let sending: NodeJS.Timeout | undefined;
    answer = (res) => {
      res.writeHead(200, sseHead);
      res.write(tokenEvent(' first'));
      sending = setInterval(() => res.write(tokenEvent(' more')), 20);
      res.once('close', () => clearInterval(sending));
    };
    piping();
    try {
      await new Promise<void>((resolve, reject) => {
        const client = request(gateway.url, { method: 'POST', agent }, (res) => {
          res.once('data', () => {
            client.destroy();
            resolve();
          });
        });
        client.once('error', (error) => (error.message === 'socket hang up' ? undefined : reject(error)));
        client.end();
      });
      assert.equal((await result()).outcome, 'client-closed-mid-response');
      await until(() => upstreamCut, 2000, 'the upstream to see its connection closed');
    } finally {
      viaForwarder = false;
      clearInterval(sending);
    }
  });

  test('a client that reads slowly holds upstream back (backpressure), and then gets every byte, stripped', async () => {
    // 20 000 events of 1 KB: far more than the sockets' buffers on the way hold.
    const content = 'x'.repeat(1000);
    const total = 20_000;
    let sent = 0;
    answer = (res) => {
      res.writeHead(200, sseHead);
      const more = () => {
        while (sent < total) {
          sent++;
          if (!res.write(tokenEvent(content))) return void res.once('drain', more);
        }
        res.end(DONE);
      };
      more();
    };
    piping({ stripUsage: true });
    const pipe = handle;
    let gatewayRes: ServerResponse | undefined;
    handle = (response, res) => {
      gatewayRes = res;
      return pipe(response, res);
    };
    let held: { sent: number; buffered: number } | undefined;
    const body = await new Promise<Buffer>((resolve, reject) => {
      const client = request(gateway.url, { agent }, (res) => {
        // Not read for a while: the gateway must stop reading upstream, not buffer it all.
        res.pause();
        void sleep(300).then(() => {
          held = { sent, buffered: gatewayRes?.writableLength ?? -1 };
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.once('end', () => resolve(Buffer.concat(chunks)));
          res.resume();
        });
      });
      client.once('error', reject);
      client.end();
    });
    assert.ok(held && held.sent < total, `upstream held back while the client did not read (sent ${held?.sent} of ${total})`);
    assert.ok(held.buffered >= 0 && held.buffered < 256 * 1024, `the gateway buffered ${held.buffered} bytes`);
    const plain = tokenEvent(content).replace(',"usage":null', '');
    assert.equal(body.length, plain.length * total + DONE.length);
    assert.equal(body.toString(), plain.repeat(total) + DONE);
    assert.equal((await result()).outcome, 'ok');
  });

  test('readLimited keeps at most its limit, and still reads the body to its end', async () => {
    const body = Buffer.alloc(3000);
    for (let i = 0; i < body.length; i++) body[i] = i % 251;
    answer = (res) => {
      res.writeHead(503, { 'content-length': body.length });
      void (async () => {
        for (let i = 0; i < 3; i++) {
          res.write(body.subarray(i * 1000, (i + 1) * 1000));
          await sleep(5);
        }
        res.end();
      })();
    };
    handle = async (response, res) => {
      const kept = await readLimited(response, 1500);
      res.end();
      return { kept, complete: response.complete };
    };
    await send(gateway.url);
    const { kept, complete } = (await within(handled, 3000, 'readLimited')) as { kept: Buffer; complete: boolean };
    assert.deepEqual(kept, body.subarray(0, 1500), 'the first 1500 bytes, cut inside the second chunk');
    assert.equal(complete, true, 'the rest was read and dropped, so the connection is left clean');

    handle = async (response, res) => {
      const kept = await readLimited(response, 64 * 1024);
      res.end();
      return kept;
    };
    await send(gateway.url);
    assert.deepEqual(await within(handled, 3000, 'readLimited'), body, 'under the limit: all of it');
  });

  test('readLimited returns what came before a reset, without throwing', async () => {
    answer = (res) => {
      res.writeHead(500, { 'content-type': 'application/json', 'content-length': '1000' });
      res.write('{"error":');
      setTimeout(() => res.socket?.resetAndDestroy(), 20);
    };
    handle = async (response, res) => {
      const kept = await readLimited(response, 1024);
      res.end();
      return kept;
    };
    await send(gateway.url);
    assert.equal(String(await within(handled, 3000, 'readLimited')), '{"error":');
  });
});
