/**
 * Rate limiting as Azure does it: TPM over a sliding minute from the arrival estimate, RPM over a
 * 10-second window, 429 bodies and retry-after values that work when honoured, PTU utilization.
 * Estimates are built exactly: a prompt of 4k characters costs k tokens, plus max_tokens.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { AzureOpenAI, RateLimitError } from 'openai';
import type { ChatCompletionCreateParamsNonStreaming } from 'openai/resources/chat/completions';
import { startSimulator, type Simulator } from '../../shared/simulator/index.ts';
import { SlidingWindowCounter } from '../../shared/simulator/sliding-window.ts';

const KEY = 'k';

/** A chat request whose rate-limit estimate is exactly `estimate` (>= 1) tokens. */
function bodyCosting(estimate: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const promptTokens = Math.floor((estimate - 1) / 2);
  return { messages: [{ role: 'user', content: 'x'.repeat(promptTokens * 4) }], max_tokens: estimate - promptTokens, ...extra };
}

function chatAt(sim: Simulator, deployment: string, body: unknown): Promise<Response> {
  return fetch(`${sim.url}/openai/deployments/${deployment}/chat/completions?api-version=2024-10-21`, {
    method: 'POST',
    headers: { 'api-key': KEY, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

async function expect429(res: Response): Promise<{ retryAfterMs: number; retryAfter: number; message: string }> {
  assert.equal(res.status, 429);
  const body = (await res.json()) as { error: { code: string; message: string } };
  assert.deepEqual(Object.keys(body.error), ['code', 'message']);
  assert.equal(body.error.code, 'RateLimitReached');
  const retryAfterMs = Number(res.headers.get('retry-after-ms'));
  const retryAfter = Number(res.headers.get('retry-after'));
  assert.ok(Number.isInteger(retryAfterMs) && retryAfterMs > 0, `retry-after-ms ${res.headers.get('retry-after-ms')}`);
  assert.equal(retryAfter, Math.ceil(retryAfterMs / 1000), 'retry-after is whole seconds, rounded up');
  assert.ok(body.error.message.includes(`Please retry after ${retryAfter} seconds.`), body.error.message);
  return { retryAfterMs, retryAfter, message: body.error.message };
}

describe('sliding window counter', () => {
  test('sums exactly, expires whole buckets, and says when an amount frees', () => {
    const window = new SlidingWindowCounter(1000, 10); // buckets of 100 ms
    window.add(5, 0);
    window.add(7, 150);
    window.add(1, 999);
    assert.equal(window.total(999), 13);
    assert.equal(window.timeUntilFree(5, 999), 1); // bucket [0,100) leaves at 1000
    assert.equal(window.timeUntilFree(6, 999), 101); // then bucket [100,200) at 1100
    assert.equal(window.timeUntilFree(14, 999), Infinity);
    assert.equal(window.total(1000), 8);
    assert.equal(window.total(1099.9), 8);
    assert.equal(window.total(1100), 1);
    assert.equal(window.total(5000), 0, 'a long idle gap clears everything');
    window.add(2, 5000);
    assert.equal(window.total(5000), 2);
  });
});

describe('Standard deployments (windows that outlast the test)', () => {
  let strict: Simulator; // rejected requests do not count: limits are checked to the token
  let azureLike: Simulator; // default: rejected requests count, as Azure documents

  before(async () => {
    const deployments = [
      { name: 'tokens', tpm: 1000, rpm: 60_000, region: 'West Europe' },
      { name: 'embed-tokens', model: 'text-embedding-3-small', tpm: 1000, rpm: 60_000 },
      { name: 'calls', rpm: 12 },
      { name: 'derived', tpm: 8000 },
    ];
    strict = await startSimulator({ apiKeys: [KEY], deployments, countRejected: false });
    azureLike = await startSimulator({ apiKeys: [KEY], deployments });
  });
  after(async () => {
    await strict.close();
    await azureLike.close();
  });

  test('TPM is enforced to the token, with remaining-tokens counting down', async () => {
    for (let i = 1; i <= 9; i++) {
      const res = await chatAt(strict, 'tokens', bodyCosting(100));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-ratelimit-remaining-tokens'), String(1000 - 100 * i));
      assert.equal(res.headers.get('x-ratelimit-limit-tokens'), '1000');
      assert.equal(res.headers.get('x-ratelimit-limit-requests'), '10000');
      assert.equal(res.headers.get('x-ratelimit-remaining-requests'), String(10000 - i));
      await res.arrayBuffer();
    }
    // 900 used: 101 would make 1001.
    const over = await expect429(await chatAt(strict, 'tokens', bodyCosting(101)));
    assert.equal(
      over.message,
      `Your requests to tokens for gpt-4o in West Europe have exceeded the token rate limit for your current OpenAI S0 pricing tier. This request was for ChatCompletions_Create under Azure OpenAI API version 2024-10-21. Please retry after ${over.retryAfter} seconds. To increase your default rate limit, visit: https://aka.ms/oai/quotaincrease.`,
    );
    // Everything sits in the window's first second: it frees when the minute has passed.
    assert.ok(over.retryAfterMs > 58_000 && over.retryAfterMs <= 60_001, String(over.retryAfterMs));
    // Exactly 100 still fits (not counted: countRejected false), then not a single token more.
    const last = await chatAt(strict, 'tokens', bodyCosting(100));
    assert.equal(last.status, 200);
    assert.equal(last.headers.get('x-ratelimit-remaining-tokens'), '0');
    await last.arrayBuffer();
    await expect429(await chatAt(strict, 'tokens', bodyCosting(1)));
    assert.deepEqual([strict.stats('tokens').served, strict.stats('tokens').throttled], [10, 2]);
  });

  test('the estimate uses max_tokens × n, max_completion_tokens, and defaultMaxTokens (16) when absent', async () => {
    strict.reset();
    // 40 chars (10) + 16 default = 26 per request.
    const noMax = await chatAt(strict, 'tokens', { messages: [{ role: 'user', content: 'y'.repeat(40) }] });
    assert.equal(noMax.headers.get('x-ratelimit-remaining-tokens'), '974');
    const withN = await chatAt(strict, 'tokens', { messages: [{ role: 'user', content: 'y'.repeat(5) }], max_tokens: 10, n: 3 });
    assert.equal(withN.headers.get('x-ratelimit-remaining-tokens'), String(974 - (2 + 30)));
    const completionTokens = await chatAt(strict, 'tokens', { messages: [{ role: 'user', content: '' }], max_completion_tokens: 42 });
    assert.equal(completionTokens.headers.get('x-ratelimit-remaining-tokens'), String(942 - 42));
    // Content parts count their text.
    const parts = await chatAt(strict, 'tokens', {
      messages: [{ role: 'user', content: [{ type: 'text', text: 'z'.repeat(8) }] }],
      max_tokens: 1,
    });
    assert.equal(parts.headers.get('x-ratelimit-remaining-tokens'), String(900 - 3));
    await Promise.all([noMax, withN, completionTokens, parts].map((res) => res.arrayBuffer()));
  });

  test('rejected requests count against the window by default', async () => {
    const first = await chatAt(azureLike, 'tokens', bodyCosting(900));
    assert.equal(first.status, 200);
    await first.arrayBuffer();
    const rejected = await chatAt(azureLike, 'tokens', bodyCosting(200));
    await expect429(rejected);
    assert.equal(rejected.headers.get('x-ratelimit-remaining-tokens'), '0', '900 + 200 counted');
    // 100 would have fitted beside the 900 alone; the counted 200 pushes it out.
    await expect429(await chatAt(azureLike, 'tokens', bodyCosting(100)));
  });

  test('RPM is enforced per 10-second window to the request, as a "call rate limit"', async () => {
    for (let i = 1; i <= 2; i++) {
      const res = await chatAt(strict, 'calls', bodyCosting(10));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-ratelimit-limit-requests'), '2', '12 RPM = 2 per 10 s');
      assert.equal(res.headers.get('x-ratelimit-remaining-requests'), String(2 - i));
      assert.equal(res.headers.get('x-ratelimit-limit-tokens'), null, 'no token limit configured');
      await res.arrayBuffer();
    }
    const over = await expect429(await chatAt(strict, 'calls', bodyCosting(10)));
    assert.ok(over.message.includes('exceeded the call rate limit'), over.message);
    assert.ok(over.retryAfterMs > 9_000 && over.retryAfterMs <= 10_001, String(over.retryAfterMs));
  });

  test('RPM defaults to 6 per 1000 TPM', async () => {
    const res = await chatAt(strict, 'derived', bodyCosting(10));
    assert.equal(res.headers.get('x-ratelimit-limit-requests'), '8', '8000 TPM -> 48 RPM -> 8 per 10 s');
    await res.arrayBuffer();
  });

  test('the openai client surfaces the 429 as RateLimitError with the headers', async () => {
    const client = new AzureOpenAI({ endpoint: strict.url, apiKey: KEY, apiVersion: '2024-10-21', deployment: 'tokens', maxRetries: 0 });
    await assert.rejects(
      client.chat.completions.create(bodyCosting(5000) as unknown as ChatCompletionCreateParamsNonStreaming),
      (error: unknown) => {
        assert.ok(error instanceof RateLimitError);
        assert.equal((error.error as { code?: string }).code, 'RateLimitReached');
        assert.ok(Number(error.headers.get('retry-after-ms')) > 0);
        return true;
      },
    );
  });

  test('embeddings and completions name their operation in the 429', async () => {
    const embeddings = await fetch(`${strict.url}/openai/deployments/embed-tokens/embeddings?api-version=2024-06-01`, {
      method: 'POST',
      headers: { 'api-key': KEY },
      body: JSON.stringify({ input: 'e'.repeat(8000) }),
    });
    assert.ok(
      (await expect429(embeddings)).message.includes('This request was for Embeddings_Create under Azure OpenAI API version 2024-06-01.'),
    );
    const completions = await fetch(`${strict.url}/openai/v1/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: 'tokens', prompt: 'p', max_tokens: 5000 }),
    });
    assert.ok(
      (await expect429(completions)).message.includes('This request was for Completions_Create under Azure OpenAI API version v1.'),
    );
  });
});

describe('retry-after works when honoured (short windows)', () => {
  let sim: Simulator;
  before(async () => {
    sim = await startSimulator({
      apiKeys: [KEY],
      windowMs: 1200,
      countRejected: false,
      deployments: [
        { name: 'tpm', tpm: 100, rpm: 600_000 },
        { name: 'rpm', rpm: 12 * 5 }, // minute 1.2 s → request window 200 ms with 10 requests
      ],
    });
  });
  after(() => sim.close());

  test('TPM: too early is still 429, at retry-after-ms it passes', async () => {
    assert.equal((await chatAt(sim, 'tpm', bodyCosting(60))).status, 200);
    await sleep(300);
    assert.equal((await chatAt(sim, 'tpm', bodyCosting(30))).status, 200);
    // 90 used: 60 more needs the first 60 to leave, ~1200 ms after it arrived.
    const { retryAfterMs } = await expect429(await chatAt(sim, 'tpm', bodyCosting(60)));
    assert.ok(retryAfterMs > 700 && retryAfterMs <= 1201, String(retryAfterMs));
    await sleep(retryAfterMs - 150);
    await expect429(await chatAt(sim, 'tpm', bodyCosting(60)));
    await sleep(150);
    const res = await chatAt(sim, 'tpm', bodyCosting(60));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-ratelimit-remaining-tokens'), '10', 'the 30 is still in the window');
  });

  test('RPM: the 11th request in 200 ms waits for the first to leave the short window', async () => {
    const results = await Promise.all(Array.from({ length: 11 }, () => chatAt(sim, 'rpm', bodyCosting(10))));
    const statuses = results.map((res) => res.status).sort();
    assert.deepEqual(statuses, [...Array(10).fill(200), 429]);
    const rejected = results.find((res) => res.status === 429) as Response;
    const { retryAfterMs } = await expect429(rejected);
    assert.ok(retryAfterMs <= 201, String(retryAfterMs));
    await sleep(retryAfterMs);
    assert.equal((await chatAt(sim, 'rpm', bodyCosting(10))).status, 200);
  });

  test('the openai client retries on its own and succeeds', async () => {
    sim.reset();
    const client = new AzureOpenAI({ endpoint: sim.url, apiKey: KEY, apiVersion: '2024-10-21', deployment: 'tpm', maxRetries: 3 });
    await client.chat.completions.create(bodyCosting(90) as unknown as ChatCompletionCreateParamsNonStreaming);
    const started = performance.now();
    await client.chat.completions.create(bodyCosting(90) as unknown as ChatCompletionCreateParamsNonStreaming);
    assert.ok(performance.now() - started > 500, 'it waited for the window');
    assert.deepEqual([sim.stats('tpm').served, sim.stats('tpm').throttled], [2, 1]);
  });
});

describe('PTU deployments', () => {
  let sim: Simulator;
  before(async () => {
    sim = await startSimulator({
      apiKeys: [KEY],
      windowMs: 60_000,
      deployments: [
        { name: 'ptu', ptu: { tokensPerMinute: 1000 }, completionTokens: 1000 },
        { name: 'ptu-fast', ptu: { tokensPerMinute: 1000 }, completionTokens: 1000 },
      ],
    });
  });
  after(() => sim.close());

  test('utilization header, bursts over 100%, then a fast 429 until it drains below 100%', async () => {
    const first = await chatAt(sim, 'ptu', { messages: [{ role: 'user', content: 'Hello' }], max_tokens: 600 });
    assert.equal(first.status, 200);
    // On arrival the estimate (2 + 600) is added: 60.2%.
    assert.equal(first.headers.get('azure-openai-deployment-utilization'), '60.2%');
    for (const name of ['x-ratelimit-remaining-tokens', 'x-ratelimit-remaining-requests', 'x-ratelimit-limit-tokens']) {
      assert.equal(first.headers.get(name), null, `PTU sends no ${name}`);
    }
    const usage = ((await first.json()) as { usage: { total_tokens: number } }).usage;
    assert.equal(usage.total_tokens, 608, 'corrected on completion to 8 prompt + 600 completion');

    // Below 100% the next request is admitted although it takes the bucket over (a burst).
    const second = await chatAt(sim, 'ptu', { messages: [{ role: 'user', content: 'Hello' }], max_tokens: 600 });
    assert.equal(second.status, 200);
    const utilization = parseFloat(second.headers.get('azure-openai-deployment-utilization') ?? '');
    assert.ok(utilization > 120 && utilization <= 121, String(utilization));
    await second.arrayBuffer();

    const started = performance.now();
    const third = await chatAt(sim, 'ptu', { messages: [{ role: 'user', content: 'Hello' }], max_tokens: 1 });
    assert.ok(performance.now() - started < 2000, 'a fast fail, not a wait of 13 s for the bucket to drain');
    const { retryAfterMs } = await expect429(third);
    // 1216 tokens in the bucket, draining 1000 per 60 s: 216 × 60 ms to get under 100%.
    assert.ok(Math.abs(retryAfterMs - 216 * 60) < 300, String(retryAfterMs));
    assert.ok(parseFloat(third.headers.get('azure-openai-deployment-utilization') ?? '') > 120);
    // A fast fail does not fill the bucket further.
    const again = await chatAt(sim, 'ptu', { messages: [{ role: 'user', content: 'Hello' }], max_tokens: 1 });
    const retryAgain = (await expect429(again)).retryAfterMs;
    assert.ok(retryAgain <= retryAfterMs);
  });

  test('honouring retry-after-ms gets through', async () => {
    const fast = await startSimulator({
      apiKeys: [KEY],
      windowMs: 1000,
      deployments: [{ name: 'p', ptu: { tokensPerMinute: 100 }, completionTokens: 150 }],
    });
    try {
      assert.equal((await chatAt(fast, 'p', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 150 })).status, 200);
      const { retryAfterMs } = await expect429(await chatAt(fast, 'p', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5 }));
      assert.ok(retryAfterMs > 300 && retryAfterMs < 700, String(retryAfterMs));
      await sleep(retryAfterMs);
      assert.equal((await chatAt(fast, 'p', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5 })).status, 200);
    } finally {
      await fast.close();
    }
  });
});
