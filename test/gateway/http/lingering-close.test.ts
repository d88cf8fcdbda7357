/**
 * The lingering close after a refused body, over real sockets on 127.0.0.1. Through a real gateway:
 * Node's fetch, in a process of its own (a client sharing the gateway's event loop never lost the
 * race this is about), uploading far more than maxBodyBytes reads its 413 every time; a client that
 * reads only once it has sent its whole body reads its 413 (chunked, refused mid-body) and its 408
 * (trickled past bodyTimeoutMs). On a bare node:http server: the lingering is bounded in time and
 * in bytes, and ends as soon as the refused body has arrived.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { closeLingering, type LingerLimits } from '../../../gateway/http/lingering-close.ts';
import { errors, sendError } from '../../../gateway/errors.ts';
import { NOWHERE } from '../../helpers/collaborators.ts';
import { until } from '../../helpers/fixtures.ts';
import { CLIENT_KEY, startGateway, testConfig, type RunningGateway } from '../../helpers/gateway.ts';

const MiB = 1024 * 1024;
const BODY_TIMEOUT_MS = 300;
const CHAT = '/openai/deployments/p/chat/completions?api-version=2024-10-21';

/**
 * Node's fetch in its own process: `runs` uploads of `mib` MiB, each one buffer (so with a
 * content-length). Prints one outcome per run: the status and error code read, or the error the
 * upload ended with.
 */
const FETCH_CLIENT = `
const [url, key, runs, mib] = process.argv.slice(1);
const body = Buffer.alloc(Number(mib) * 1024 * 1024, 0x61);
const outcomes = [];
for (let i = 0; i < Number(runs); i++) {
  const init = { method: 'POST', headers: { 'api-key': key, 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(8000) };
  try {
    const response = await fetch(url, init);
    const text = await response.text();
    let code = 'not-json';
    try { code = JSON.parse(text).error.code; } catch {}
    outcomes.push(response.status + ' ' + code);
  } catch (error) {
    outcomes.push('failed: ' + (error.cause?.code ?? error.cause?.message ?? error.name));
  }
}
process.stdout.write(JSON.stringify(outcomes));
`;

function fetchInOwnProcess(url: string, runs: number, mib: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', FETCH_CLIENT, url, CLIENT_KEY, String(runs), String(mib)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(JSON.parse(out) as string[]);
      else reject(new Error(`fetch client exited with ${code}: ${err}`));
    });
  });
}

/**
 * A client that sends its whole request before it reads the answer (as Python's requests does),
 * writing strings and buffers, waiting at numbers (ms). Resolves with what it read, or what ended it.
 */
function sendThenRead(port: number, parts: Array<string | Buffer | number>): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.pause();
    let text = '';
    let failure = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
    socket.on('error', (error: NodeJS.ErrnoException) => (failure ||= error.code ?? error.message));
    const timer = setTimeout(() => socket.destroy(), 8000);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(text || `nothing read: ${failure || 'closed'}`);
    });
    const next = (index: number): void => {
      const part = parts[index];
      if (part === undefined || socket.destroyed) return void socket.resume();
      if (typeof part === 'number') return void setTimeout(() => next(index + 1), part);
      socket.write(part, (error) => (error ? socket.resume() : next(index + 1)));
    };
    next(0);
  });
}

describe('lingering close through a gateway: the client reads its answer, not a reset', () => {
  let gateway: RunningGateway & { port: number };
  before(async () => {
    const config = testConfig({
      pools: { p: { deployments: [{ id: 'd', endpoint: NOWHERE }] } },
      gateway: { maxBodyBytes: 4 * MiB, bodyTimeoutMs: BODY_TIMEOUT_MS },
    });
    const running = await startGateway(config, { memory: true });
    gateway = Object.assign(running, { port: Number(new URL(running.url).port) });
  });
  after(() => gateway.close());

  test('Node’s fetch uploading 16 MiB and 64 MiB with a content-length, 4 MiB allowed: its 413 JSON every time', async () => {
    const outcomes = [
      ...(await fetchInOwnProcess(`${gateway.url}${CHAT}`, 12, 16)),
      ...(await fetchInOwnProcess(`${gateway.url}${CHAT}`, 3, 64)),
    ];
    assert.deepEqual(outcomes, Array(15).fill('413 RequestEntityTooLarge'));
  });

  test('a chunked body refused once 4 MiB have been read: its 413 JSON, to a client that reads only once it has sent it all', async () => {
    const head = `POST ${CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\napi-key: ${CLIENT_KEY}\r\ntransfer-encoding: chunked\r\n\r\n`;
    const chunk = Buffer.concat([Buffer.from(`${MiB.toString(16)}\r\n`), Buffer.alloc(MiB, 0x61), Buffer.from('\r\n')]);
    const body = Buffer.concat([...Array<Buffer>(8).fill(chunk), Buffer.from('0\r\n\r\n')]);
    for (let run = 0; run < 3; run++) {
      const answer = await sendThenRead(gateway.port, [head, body]);
      assert.match(answer, /^HTTP\/1\.1 413 .*"code":"RequestEntityTooLarge"/s);
    }
  });

  test('a body trickled past bodyTimeoutMs: its 408 JSON, to a client that reads only once it has sent it all', async () => {
    const size = 3 * MiB;
    const head = `POST ${CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\napi-key: ${CLIENT_KEY}\r\ncontent-length: ${size}\r\n\r\n`;
    // 7 bytes every 100 ms for 800 ms, well past bodyTimeoutMs, then the rest at once.
    const trickle = Array.from({ length: 8 }, () => [Buffer.from('{"a":1}'), 100] as const).flat();
    const rest = Buffer.alloc(size - 8 * 7, 0x20);
    for (let run = 0; run < 3; run++) {
      const answer = await sendThenRead(gateway.port, [head, ...trickle, rest]);
      assert.match(answer, /^HTTP\/1\.1 408 .*"code":"RequestTimeout"/s);
    }
  });
});

describe('lingering close: bounded, and no longer than needed', () => {
  let server: Server;
  let port: number;
  let limits: LingerLimits;
  /** The server side of the latest connection, to read what it took in and when it closed. */
  let serverSocket: Socket | undefined;
  let serverClosedAt: number | undefined;
  before(async () => {
    // Refuses every body at once, unread, with a lingering close under `limits`.
    server = createServer((req, res) => {
      serverSocket = req.socket;
      req.socket.once('close', () => (serverClosedAt = Date.now()));
      closeLingering(req, res, limits);
      sendError(res, errors.tooLarge(1024));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  const clients: Socket[] = [];
  after(() => {
    for (const client of clients) client.destroy();
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /**
   * A client that sends headers for a body of `declared` bytes, then writes `chunk`s as fast as the
   * connection takes them, until they are all sent or the connection is cut.
   */
  function endlessUpload(declared: number, chunk = Buffer.alloc(64 * 1024, 0x61)) {
    serverSocket = undefined;
    serverClosedAt = undefined;
    // Half-open allowed: the server's FIN after its answer does not stop this client sending.
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let received = '';
    let written = 0;
    socket.on('data', (data: Buffer) => (received += data.toString()));
    socket.on('error', () => undefined);
    clients.push(socket);
    const pump = () => {
      while (!socket.destroyed && written < declared) {
        written += chunk.length;
        if (!socket.write(chunk)) return void socket.once('drain', pump);
      }
    };
    socket.write(`POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-length: ${declared}\r\n\r\n`);
    pump();
    const started = Date.now();
    return {
      received: () => received,
      written: () => written,
      /** When the server closed the connection, in ms from the start. */
      closedAfter: async (timeoutMs: number) => {
        await until(() => serverClosedAt !== undefined, timeoutMs, 'the server to close the connection');
        return serverClosedAt! - started;
      },
    };
  }

  test('a client that keeps sending is cut once the time limit passed, having had its answer', async () => {
    limits = { ms: 400, bytes: 1024 * MiB };
    // 1 GiB: more than the client can send in that time.
    const client = endlessUpload(1024 * MiB, Buffer.alloc(16 * 1024, 0x61));
    const ms = await client.closedAfter(5000);
    assert.match(client.received(), /^HTTP\/1\.1 413 .*"RequestEntityTooLarge"/s);
    assert.ok(ms >= limits.ms * 0.8, `the connection lingered ${ms} ms while the client was sending`);
    assert.ok(client.written() < 1024 * MiB, 'it was cut before the client was done');
  });

  test('a client that keeps sending is cut once the byte limit was read, long before the time limit', async () => {
    limits = { ms: 30_000, bytes: 2 * MiB };
    const client = endlessUpload(1024 * MiB);
    const ms = await client.closedAfter(10_000);
    assert.match(client.received(), /^HTTP\/1\.1 413 /);
    assert.ok(ms < limits.ms / 3, `cut after ${ms} ms`);
    // What the server took in: the byte limit, plus at most a few reads of the socket around it.
    const read = serverSocket?.bytesRead ?? 0;
    assert.ok(read > limits.bytes && read < limits.bytes + MiB, `the server read ${read} bytes`);
  });

  test('the connection closes as soon as the refused body has arrived whole', async () => {
    limits = { ms: 30_000, bytes: 1024 * MiB };
    const client = endlessUpload(8 * MiB);
    const ms = await client.closedAfter(10_000);
    assert.match(client.received(), /^HTTP\/1\.1 413 /);
    assert.equal(client.written(), 8 * MiB);
    assert.ok(ms < limits.ms / 3, `closed after ${ms} ms`);
    assert.ok((serverSocket?.bytesRead ?? 0) > 8 * MiB, 'the whole body was read');
  });
});
