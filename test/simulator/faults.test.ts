/**
 * Fault injection, the latency model, stats (including aborts) and the control API.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { beforeEach, describe, test } from 'node:test';
import { APIConnectionError, APIConnectionTimeoutError, AzureOpenAI, InternalServerError, RateLimitError } from 'openai';
import { startSimulator, type Simulator } from '../../shared/simulator/index.ts';
import { sharedByTheFile } from '../helpers/file-hooks.ts';

const KEY = 'k';
let sim: Simulator;

sharedByTheFile(
  async () => {
    sim = await startSimulator({
      apiKeys: [KEY],
      deployments: [
        { name: 'd', tpm: 1_000_000, completionTokens: 4 },
        { name: 'slow', completionTokens: 5, latency: { ttftMs: 100, perTokenMs: 20 } },
        { name: 'trickle', completionTokens: 50, latency: { ttftMs: 0, perTokenMs: 20 } },
      ],
    });
  },
  () => sim?.close(),
);
beforeEach(() => sim.reset());

const hello = { messages: [{ role: 'user' as const, content: 'Hello' }] };

function chat(deployment: string, body: Record<string, unknown> = hello, signal?: AbortSignal): Promise<Response> {
  return fetch(`${sim.url}/openai/deployments/${deployment}/chat/completions?api-version=2024-10-21`, {
    method: 'POST',
    headers: { 'api-key': KEY, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: signal ?? null,
  });
}

function client(deployment = 'd', options: { timeout?: number } = {}): AzureOpenAI {
  return new AzureOpenAI({ endpoint: sim.url, apiKey: KEY, apiVersion: '2024-10-21', deployment, maxRetries: 0, ...options });
}

/** Reads SSE events as they arrive; `next()` resolves with the next event's payload, or null at the end. */
function sseReader(res: Response) {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  return {
    async next(): Promise<string | null> {
      for (;;) {
        const end = buffer.indexOf('\n\n');
        if (end >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          return event.replace(/^data: /, '');
        }
        const { value, done } = await reader.read();
        if (done) return null;
        buffer += decoder.decode(value, { stream: true });
      }
    },
    cancel: () => reader.cancel(),
  };
}

/** Polls until the predicate holds (stats update when the server sees the socket close). */
async function eventually(predicate: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for: ${what}`);
    await sleep(10);
  }
}

describe('status faults', () => {
  test('5xx and 408 faults answer with Azure bodies and count as failed', async () => {
    const expected: [500 | 502 | 503 | 504 | 408, string | null][] = [
      [500, null],
      [502, 'BadGateway'],
      [503, 'ServiceUnavailable'],
      [504, 'GatewayTimeout'],
      [408, 'Timeout'],
    ];
    for (const [status, code] of expected) {
      sim.setFault('d', { fault: { kind: 'status', status }, count: 1 });
      const res = await chat('d');
      assert.equal(res.status, status);
      const body = (await res.json()) as { error: { code: string | null; message: string; type?: string } };
      assert.equal(body.error.code, code);
      if (status === 500) {
        assert.equal(body.error.type, 'server_error');
        assert.ok(body.error.message.includes(`(Please include the request ID ${res.headers.get('apim-request-id')} in your email.)`));
      }
      assert.ok(res.headers.get('x-ratelimit-remaining-tokens') !== null);
      assert.equal(res.headers.get('retry-after'), null);
    }
    assert.equal((await chat('d')).status, 200, 'count 1 each: the next request is served');
    assert.deepEqual([sim.stats('d').failed, sim.stats('d').served, sim.stats('d').received], [5, 1, 6]);
    await assert.rejects(
      (async () => {
        sim.setFault('d', { fault: { kind: 'status', status: 503, retryAfterMs: 1500 }, count: 1 });
        await client().chat.completions.create({ model: 'x', ...hello });
      })(),
      (error: unknown) =>
        error instanceof InternalServerError &&
        error.status === 503 &&
        error.headers.get('retry-after-ms') === '1500' &&
        error.headers.get('retry-after') === '2',
    );
  });

  test('a 429 fault and a 429 storm use the RateLimitReached body and headers', async () => {
    sim.setFault('d', { fault: { kind: 'status', status: 429, retryAfterMs: 2500 }, count: 1 });
    const res = await chat('d');
    assert.equal(res.status, 429);
    assert.equal(res.headers.get('retry-after-ms'), '2500');
    assert.equal(res.headers.get('retry-after'), '3');
    assert.equal(res.headers.get('x-ratelimit-remaining-tokens'), '0');
    assert.equal(res.headers.get('x-ratelimit-remaining-requests'), '0');
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'RateLimitReached');
    assert.ok(
      body.error.message.startsWith('Your requests to d for gpt-4o in East US have exceeded the token rate limit'),
      body.error.message,
    );
    assert.ok(body.error.message.includes('Please retry after 3 seconds.'));

    sim.setFault('d', { fault: { kind: 'storm-429', retryAfterMs: 800 } });
    for (let i = 0; i < 4; i++) {
      await assert.rejects(client().chat.completions.create({ model: 'x', ...hello }), (error: unknown) => {
        return error instanceof RateLimitError && error.headers.get('retry-after-ms') === '800';
      });
    }
    sim.setFault('d', null);
    assert.equal((await chat('d')).status, 200);
    assert.deepEqual([sim.stats('d').throttled, sim.stats('d').served], [5, 1]);
  });

  test('count limits a fault to the next N requests', async () => {
    sim.setFault('d', { fault: { kind: 'status', status: 503 }, count: 2 });
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await chat('d')).status);
    assert.deepEqual(statuses, [503, 503, 200, 200]);
  });
});

describe('connection faults', () => {
  test('reset drops the connection without a response', async () => {
    sim.setFault('d', { fault: { kind: 'reset' }, count: 1 });
    await assert.rejects(chat('d'), (error: unknown) => {
      const cause = (error as { cause?: { code?: string } }).cause;
      assert.ok(['ECONNRESET', 'UND_ERR_SOCKET'].includes(cause?.code ?? ''), `cause: ${cause?.code}`);
      return true;
    });
    sim.setFault('d', { fault: { kind: 'reset' }, count: 1 });
    await assert.rejects(client().chat.completions.create({ model: 'x', ...hello }), APIConnectionError);
    await eventually(() => sim.stats('d').failed === 2, 'two resets counted as failed');
    assert.equal(sim.stats('d').aborted, 0);
  });

  test('hang never answers: the client times out and the abort is counted', async () => {
    sim.setFault('d', { fault: { kind: 'hang' } });
    const started = performance.now();
    await assert.rejects(client('d', { timeout: 300 }).chat.completions.create({ model: 'x', ...hello }), APIConnectionTimeoutError);
    assert.ok(performance.now() - started >= 290);
    await eventually(() => sim.stats('d').aborted === 1, 'the hung request counted as aborted');
    assert.equal(sim.stats('d').inFlight, 0);
  });

  test('slow-first-byte delays the headers', async () => {
    sim.setFault('d', { fault: { kind: 'slow-first-byte', delayMs: 250 }, count: 1 });
    const started = performance.now();
    const res = await chat('d');
    const elapsed = performance.now() - started;
    assert.equal(res.status, 200);
    assert.ok(elapsed >= 245 && elapsed < 1500, String(elapsed));
    await res.json();
    const next = performance.now();
    await (await chat('d')).json();
    // Without the fault 'd' answers at once; with it, not before 250 ms. The margin between is for a busy machine.
    assert.ok(performance.now() - next < 240, 'only the next request was slowed');
  });

  test('stall-mid-stream stops after N events until the client leaves', async () => {
    sim.setFault('d', { fault: { kind: 'stall-mid-stream', afterChunks: 3 } });
    const controller = new AbortController();
    const res = await chat('d', { ...hello, stream: true }, controller.signal);
    assert.equal(res.status, 200);
    const reader = sseReader(res);
    const events = [await reader.next(), await reader.next(), await reader.next()];
    assert.equal(JSON.parse(events[2] as string).choices[0].delta.content, ' the', 'annotations, role, first token');
    const nothing = await Promise.race([reader.next(), sleep(300, 'stalled')]);
    assert.equal(nothing, 'stalled');
    controller.abort();
    await eventually(() => sim.stats('d').aborted === 1, 'the stalled stream counted as aborted');
  });

  test('stall-mid-stream with stallMs resumes and completes', async () => {
    sim.setFault('d', { fault: { kind: 'stall-mid-stream', afterChunks: 2, stallMs: 200 }, count: 1 });
    const started = performance.now();
    const stream = await client().chat.completions.create({ model: 'x', ...hello, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    assert.equal(text, ' the quick brown fox');
    assert.ok(performance.now() - started >= 195);
    await eventually(() => sim.stats('d').served === 1, 'served');
  });

  test('reset-mid-stream delivers exactly N events, then drops the connection', async () => {
    sim.setFault('d', { fault: { kind: 'reset-mid-stream', afterChunks: 4 } });
    const reader = sseReader(await chat('d', { ...hello, stream: true }));
    const received: string[] = [];
    await assert.rejects(async () => {
      for (;;) {
        const event = await reader.next();
        if (event === null) break;
        received.push(event);
      }
    });
    assert.equal(received.length, 4);
    assert.deepEqual(
      received.slice(2).map((event) => JSON.parse(event).choices[0].delta.content),
      [' the', ' quick'],
    );
    const stream = await client().chat.completions.create({ model: 'x', ...hello, stream: true });
    await assert.rejects(async () => {
      for await (const _chunk of stream) {
        // consume until the connection drops
      }
    });
    await eventually(() => sim.stats('d').failed === 2, 'mid-stream resets counted as failed');
  });

  test('mid-stream faults cut a non-streaming JSON body in the middle', async () => {
    sim.setFault('d', { fault: { kind: 'reset-mid-stream', afterChunks: 0 }, count: 1 });
    // The headers promised the whole body: the client fails while reading it.
    await assert.rejects(client().chat.completions.create({ model: 'x', ...hello }), /terminated/);
    sim.setFault('d', { fault: { kind: 'stall-mid-stream', afterChunks: 0 }, count: 1 });
    const controller = new AbortController();
    const stalled = await chat('d', hello, controller.signal);
    assert.equal(stalled.status, 200);
    assert.equal(await Promise.race([stalled.text(), sleep(300, 'stalled')]), 'stalled');
    controller.abort();
    await eventually(() => sim.stats('d').aborted === 1 && sim.stats('d').failed === 1, 'one reset, one abort');
  });

  test('setFault validates its input', () => {
    assert.throws(() => sim.setFault('d', { fault: { kind: 'status', status: 418 as 500 } }));
    assert.throws(() => sim.setFault('d', { fault: { kind: 'hang' }, count: 0 }));
    assert.throws(() => sim.setFault('nope', null), /unknown deployment 'nope'/);
  });
});

describe('latency model and stats', () => {
  test('non-streaming waits ttft + perToken × tokens', async () => {
    const started = performance.now();
    const res = await chat('slow');
    await res.json();
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 195 && elapsed < 3000, `100 + 5 × 20 ms, took ${elapsed}`);
  });

  test('streams send the first token at ttft and one token per perTokenMs', async () => {
    await (await chat('slow', { ...hello, stream: true })).text(); // warm up the client's stream path
    const started = performance.now();
    const res = await chat('slow', { ...hello, stream: true });
    const headersAt = performance.now() - started;
    assert.ok(headersAt >= 95, `headers come with the first chunk at ttft (${headersAt})`);
    const reader = sseReader(res);
    const arrivals: number[] = [];
    for (let event = await reader.next(); event !== null; event = await reader.next()) {
      const parsed = event === '[DONE]' ? null : (JSON.parse(event) as { choices: { delta: { content?: string } }[] });
      if (parsed?.choices[0]?.delta.content) arrivals.push(performance.now() - started);
    }
    const total = performance.now() - started;
    const shown = arrivals.map(Math.round).join(',');
    assert.equal(arrivals.length, 5);
    // Ticks follow a fixed schedule from when the simulator got the request, which is after `started`:
    // token i can never arrive before 100 + 20·i ms, however busy the machine (2 ms for timer rounding).
    // A busy client only reads late, so gaps between reads are not asserted, only the lower bounds.
    arrivals.forEach((at, i) => assert.ok(at >= 100 + 20 * i - 2, `token ${i} due at ${100 + 20 * i} ms: ${shown}`));
    // Tokens sent all at once would arrive together; 80 ms apart on schedule, half of it left for a lagging first read.
    assert.ok((arrivals[4] as number) - (arrivals[0] as number) >= 40, `spread over the stream: ${shown}`);
    assert.ok(total < 3000, `finish at 100 + 5 × 20 ms, took ${total}`);
  });

  test('a client that leaves mid-stream is counted as aborted, and timers stop', async () => {
    const controller = new AbortController();
    const res = await chat('trickle', { ...hello, stream: true }, controller.signal);
    const reader = sseReader(res);
    for (let i = 0; i < 4; i++) await reader.next();
    controller.abort();
    await eventually(() => sim.stats('trickle').aborted === 1, 'aborted counted');
    assert.deepEqual(sim.stats('trickle'), {
      received: 1,
      served: 0,
      throttled: 0,
      failed: 0,
      aborted: 1,
      promptTokens: 0,
      completionTokens: 0,
      inFlight: 0,
      peakConcurrency: 1,
    });
  });

  test('served tokens, inFlight and peakConcurrency', async () => {
    const responses = await Promise.all(Array.from({ length: 5 }, () => chat('slow')));
    assert.equal(sim.stats('slow').inFlight, 0);
    await Promise.all(responses.map((res) => res.json()));
    assert.deepEqual(sim.stats('slow'), {
      received: 5,
      served: 5,
      throttled: 0,
      failed: 0,
      aborted: 0,
      promptTokens: 5 * 8,
      completionTokens: 5 * 5,
      inFlight: 0,
      peakConcurrency: 5,
    });
    sim.resetStats();
    assert.equal(sim.stats('slow').received, 0);
  });

  test('close() ends hanging requests and stream timers promptly', async () => {
    const own = await startSimulator({
      apiKeys: [KEY],
      deployments: [{ name: 'h', latency: { ttftMs: 0, perTokenMs: 50 }, completionTokens: 1000 }],
    });
    own.setFault('h', { fault: { kind: 'hang' }, count: 1 });
    const hanging = fetch(`${own.url}/openai/v1/chat/completions`, {
      method: 'POST',
      headers: { 'api-key': KEY },
      body: JSON.stringify({ model: 'h', ...hello }),
    });
    const streaming = await fetch(`${own.url}/openai/v1/chat/completions`, {
      method: 'POST',
      headers: { 'api-key': KEY },
      body: JSON.stringify({ model: 'h', ...hello, stream: true }),
    });
    await eventually(() => own.stats('h').inFlight === 2, 'both in flight');
    const started = performance.now();
    await own.close();
    assert.ok(performance.now() - started < 2000, 'not the 50 s the stream had left');
    await assert.rejects(hanging);
    await assert.rejects(streaming.text());
    assert.equal(own.stats('h').inFlight, 0);
  });
});

describe('control API', () => {
  const control = (path: string, init?: RequestInit) => fetch(`${sim.url}/_sim/${path}`, init);
  const postJson = (path: string, body: unknown) => control(path, { method: 'POST', body: JSON.stringify(body) });

  test('faults, stats and reset over HTTP', async () => {
    const set = await postJson('faults', { deployment: 'd', fault: { kind: 'status', status: 502 }, count: 1 });
    assert.equal(set.status, 200);
    assert.deepEqual(await set.json(), { ok: true });
    assert.equal((await chat('d')).status, 502);
    assert.equal((await chat('d')).status, 200);

    const all = (await (await control('stats')).json()) as Record<string, { received: number; failed: number; served: number }>;
    assert.deepEqual(Object.keys(all), ['d', 'slow', 'trickle']);
    assert.deepEqual([all.d?.received, all.d?.failed, all.d?.served], [2, 1, 1]);
    const one = (await (await control('stats?deployment=d')).json()) as { received: number };
    assert.equal(one.received, 2);

    await postJson('faults', { deployment: 'd', fault: { kind: 'storm-429', retryAfterMs: 100 } });
    assert.equal((await chat('d')).status, 429);
    await postJson('faults', { deployment: 'd', fault: null });
    assert.equal((await chat('d')).status, 200);

    await postJson('faults', { deployment: 'd', fault: { kind: 'hang' } });
    const reset = await control('reset', { method: 'POST' });
    assert.deepEqual(await reset.json(), { ok: true });
    assert.equal(sim.stats('d').received, 0);
    assert.equal((await chat('d')).status, 200, 'reset clears faults too');
  });

  test('bad control input is refused with a reason', async () => {
    const invalid = await postJson('faults', { deployment: 'd', fault: { kind: 'status', status: 418 } });
    assert.equal(invalid.status, 400);
    assert.match(((await invalid.json()) as { error: string }).error, /status/);
    const extra = await postJson('faults', { deployment: 'd', fault: { kind: 'hang', extra: 1 } });
    assert.equal(extra.status, 400);
    const notJson = await control('faults', { method: 'POST', body: '{' });
    assert.equal(notJson.status, 400);
    const unknown = await postJson('faults', { deployment: 'zzz', fault: null });
    assert.equal(unknown.status, 404);
    assert.equal((await control('nothing')).status, 404);
    assert.equal((await control('stats?deployment=zzz')).status, 404);
  });
});
