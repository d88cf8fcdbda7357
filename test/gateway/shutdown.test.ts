/**
 * Graceful shutdown with real processes (README "Operating Spillway"): two instances on the test
 * Redis in front of the simulator, whose latency model makes streams last seconds. SIGTERM during a
 * stream: /readyz answers 503 at once, new connections are still accepted during shutdownDelayMs and
 * refused after it, the stream completes whole, the process exits 0, and the other instance's
 * /admin/pools shows nothing left in flight (leaseMs is 30 s: a lease left behind would show). A
 * stream still running when shutdownGraceMs ends is cut, its lease released and its request logged
 * (so its quota booking was settled) before the exit. A second signal exits at once.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { Simulator } from '../../shared/simulator/index.ts';
import type { GatewayConfig } from '../../shared/config/schema.ts';
import { CLIENT_KEY, spawnGateway, testConfig, type GatewayProcess } from '../helpers/gateway.ts';
import { chat, simulator, uniquePool, until } from '../helpers/fixtures.ts';

const ADMIN_KEY = 'admin-shutdown-key-0123';
/** Generated tokens per stream (the simulator sends one event per token). */
const TOKENS = 25;
/** The client's quota: what its window holds shows whether a booking was settled with the real usage. */
const CLIENT_TPM = 1_000_000;
/** max_tokens of the streams: the arrival estimate books about this much until the booking is settled. */
const MAX_TOKENS = 2000;

interface StreamRead {
  contentEvents: number;
  finishReason: string | undefined;
  sawDone: boolean;
  error: string | undefined;
  endedAt: number;
}

/** A streamed chat through `url`; `first` resolves at the first generated token, `end` when the stream is over (whole or cut). */
async function openStream(url: string, pool: string): Promise<{ response: Response; first: Promise<void>; end: Promise<StreamRead> }> {
  const response = await chat(url, pool, { stream: true, body: { max_tokens: MAX_TOKENS }, signal: AbortSignal.timeout(20_000) });
  assert.equal(response.status, 200);
  let firstToken!: () => void;
  const first = new Promise<void>((resolve) => (firstToken = resolve));
  const end = (async (): Promise<StreamRead> => {
    const read: StreamRead = { contentEvents: 0, finishReason: undefined, sawDone: false, error: undefined, endedAt: 0 };
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const data = buffer.slice(0, cut).replace(/^data: /, '');
          buffer = buffer.slice(cut + 2);
          if (data === '[DONE]') {
            read.sawDone = true;
            continue;
          }
          const choice = (JSON.parse(data) as { choices: { delta?: { content?: string }; finish_reason?: string | null }[] }).choices[0];
          if (choice?.delta?.content) {
            read.contentEvents += 1;
            firstToken();
          }
          if (choice?.finish_reason) read.finishReason = choice.finish_reason;
        }
      }
    } catch (error) {
      read.error = (error as Error).message;
    }
    read.endedAt = Date.now();
    firstToken();
    return read;
  })();
  return { response, first, end };
}

/** 'connected' or the connection error's code (ECONNREFUSED once the listener stopped). */
function tryConnect(url: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port), timeout: 1000 });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve('ETIMEDOUT');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
  });
}

/** The exit code and signal, within `ms`. */
function exitOf(child: ChildProcess, ms: number): Promise<{ code: number | null; signal: string | null; at: number }> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode, at: Date.now() });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the process did not exit within ${ms} ms`)), ms);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, at: Date.now() });
    });
  });
}

describe('graceful shutdown (real processes, two instances on one Redis)', { timeout: 60_000 }, () => {
  let sim: Simulator;
  /** The instance that stays up and reports the cluster's state. */
  let observer: GatewayProcess;
  const processes: GatewayProcess[] = [];
  const steady = uniquePool('steady');
  const long = uniquePool('long');
  const client = uniquePool('client');

  const config = (gateway: Record<string, unknown> = {}): GatewayConfig =>
    testConfig({
      pools: {
        [steady]: { deployments: [{ id: 'd1', endpoint: sim.url, deployment: 'slow' }] },
        [long]: { deployments: [{ id: 'd1', endpoint: sim.url, deployment: 'slower' }] },
      },
      clients: [{ name: client, apiKey: CLIENT_KEY, tpm: CLIENT_TPM }],
      gateway,
    });
  const spawn = async (gateway: Record<string, unknown>) => {
    const gw = await spawnGateway(config(gateway), { ADMIN_API_KEY: ADMIN_KEY });
    processes.push(gw);
    return gw;
  };
  /** Every deployment's in-flight count as the observer instance reads it from Redis. */
  const inFlight = async (): Promise<Record<string, number>> => {
    const response = await fetch(`${observer.url}/admin/pools`, { headers: { 'api-key': ADMIN_KEY }, signal: AbortSignal.timeout(5000) });
    assert.equal(response.status, 200);
    const { pools } = (await response.json()) as { pools: Record<string, { deployments: { id: string; inFlight: number }[] }> };
    return Object.fromEntries(
      Object.entries(pools).flatMap(([pool, { deployments }]) => deployments.map((d) => [`${pool}/${d.id}`, d.inFlight])),
    );
  };

  before(async () => {
    sim = await simulator([
      // About 3 s per stream (20 + 25 × 120 ms) and 7.5 s per stream.
      { name: 'slow', latency: { ttftMs: 20, perTokenMs: 120 }, completionTokens: TOKENS },
      { name: 'slower', latency: { ttftMs: 20, perTokenMs: 300 }, completionTokens: TOKENS },
    ]);
    observer = await spawn({});
  });
  after(async () => {
    await Promise.all(processes.map((p) => p.stop('SIGKILL')));
    await sim.close();
  });

  test('SIGTERM mid-stream: 503 at once, refused after the delay, the stream completes, exit 0, nothing left in flight', async () => {
    const delayMs = 1500;
    const gw = await spawn({ shutdownDelayMs: delayMs, shutdownGraceMs: 15_000 });
    const stream = await openStream(gw.url, steady);
    await stream.first;
    assert.equal((await inFlight())[`${steady}/d1`], 1, 'the stream holds a lease');
    const exited = exitOf(gw.child, 15_000);
    const signalledAt = Date.now();
    gw.child.kill('SIGTERM');

    // /readyz says so at once, while new connections are still accepted.
    let ready: { status: number; body: { status?: string } } | undefined;
    await until(
      async () => {
        const response = await fetch(`${gw.url}/readyz`, { signal: AbortSignal.timeout(1000) });
        ready = { status: response.status, body: (await response.json()) as { status?: string } };
        return response.status === 503;
      },
      1000,
      '/readyz to answer 503',
    );
    assert.deepEqual(ready?.body.status, 'shutting down');
    assert.ok(Date.now() - signalledAt < delayMs, 'within the delay');
    assert.equal(await tryConnect(gw.url), 'connected', 'new connections are accepted during the delay');

    // After the delay the listener refuses new connections; the stream is still running then.
    await until(async () => (await tryConnect(gw.url)) === 'ECONNREFUSED', delayMs + 3000, 'new connections to be refused');
    const refusedAfter = Date.now() - signalledAt;
    assert.ok(refusedAfter >= delayMs - 100, `refused ${refusedAfter} ms after SIGTERM, not before the ${delayMs} ms delay`);
    const read = await stream.end;
    assert.ok(read.endedAt > signalledAt + refusedAfter, 'the stream outlived the listener');

    // The stream came whole: every token, its finish, [DONE].
    assert.equal(read.error, undefined);
    assert.equal(read.contentEvents, TOKENS);
    assert.equal(read.finishReason, 'stop');
    assert.ok(read.sawDone, 'data: [DONE]');

    const exit = await exited;
    assert.deepEqual([exit.code, exit.signal], [0, null], 'exit code 0');
    assert.ok(exit.at - read.endedAt < 3000, `exited ${exit.at - read.endedAt} ms after the stream ended, not at the grace's end`);
    assert.ok(
      Object.values(await inFlight()).every((n) => n === 0),
      'no lease left behind',
    );
    const logged = gw.logs.find((l) => l.pool === steady && l.stream === true);
    assert.equal(logged?.outcome, 'ok');
    assert.ok(gw.logs.some((l) => l.message === 'shutdown complete: every request ended and its lease released' && l.cut === 0));

    // The client's booking was settled with the real usage before Redis closed: the window holds
    // about prompt + 25 tokens of it, not the 2000-token estimate.
    const after = await chat(observer.url, steady, { body: { max_tokens: 5 } });
    assert.equal(after.status, 200);
    await after.arrayBuffer();
    const remaining = Number(after.headers.get('x-ratelimit-remaining-tokens'));
    assert.ok(CLIENT_TPM - remaining < MAX_TOKENS / 2, `the client's window holds ${CLIENT_TPM - remaining} tokens`);
  });

  test('a stream still running when the grace ends is cut: lease released, request logged, exit 0', async () => {
    const graceMs = 1500;
    const gw = await spawn({ shutdownDelayMs: 200, shutdownGraceMs: graceMs });
    const stream = await openStream(gw.url, long);
    await stream.first;
    assert.equal((await inFlight())[`${long}/d1`], 1, 'the stream holds a lease');
    const exited = exitOf(gw.child, 10_000);
    const signalledAt = Date.now();
    gw.child.kill('SIGTERM');

    const read = await stream.end;
    const cutAfter = read.endedAt - signalledAt;
    assert.ok(!read.sawDone && read.contentEvents < TOKENS, `cut short (${read.contentEvents} of ${TOKENS} tokens)`);
    assert.ok(cutAfter >= graceMs - 100 && cutAfter < graceMs + 1500, `cut ${cutAfter} ms after SIGTERM, at the ${graceMs} ms grace`);

    const exit = await exited;
    assert.deepEqual([exit.code, exit.signal], [0, null], 'exit code 0');
    assert.ok(exit.at - signalledAt < graceMs + 3000, `exited ${exit.at - signalledAt} ms after SIGTERM`);
    // Released before the exit: the lease would otherwise count for leaseMs (30 s).
    assert.ok(
      Object.values(await inFlight()).every((n) => n === 0),
      'no lease left behind',
    );
    // The request ended inside the gateway (quota settled, log line written) before Redis closed.
    const logged = gw.logs.find((l) => l.pool === long && l.stream === true);
    assert.equal(logged?.outcome, 'client-closed-mid-response');
    assert.ok(gw.logs.some((l) => l.message === 'shutdown grace over: requests still in flight were cut' && l.cut === 1));
    await until(() => sim.stats('slower').inFlight === 0, 2000, 'the upstream request to be aborted');
  });

  test('a second signal exits at once', async () => {
    const gw = await spawn({ shutdownDelayMs: 10_000, shutdownGraceMs: 20_000 });
    const exited = exitOf(gw.child, 5000);
    gw.child.kill('SIGINT');
    await until(async () => (await fetch(`${gw.url}/readyz`, { signal: AbortSignal.timeout(1000) })).status === 503, 1000, '/readyz 503');
    const secondAt = Date.now();
    gw.child.kill('SIGINT');
    const exit = await exited;
    assert.equal(exit.code, 130, 'exit code 128 + SIGINT');
    assert.ok(exit.at - secondAt < 1000, `exited ${exit.at - secondAt} ms after the second signal`);
  });
});
