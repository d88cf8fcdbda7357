import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { test } from 'node:test';
import { UsageStripper, acceptsStreamOptions, withUsageRequested } from '../../../gateway/upstream/usage-stream.ts';

const chunk = (content: string) =>
  `data: {"choices":[{"content_filter_results":{},"delta":{"content":"${content}"},"finish_reason":null,"index":0,"logprobs":null}],"created":1,"id":"x","model":"m","object":"chat.completion.chunk","system_fingerprint":"fp","usage":null}\n\n`;
const plain = (content: string) => chunk(content).replace(',"usage":null', '');
const usageChunk =
  'data: {"choices":[],"created":1,"id":"x","model":"m","object":"chat.completion.chunk","system_fingerprint":"fp","usage":{"completion_tokens":2,"prompt_tokens":8,"total_tokens":10}}\n\n';

test('strips the usage chunk and the usage:null fields, whatever the chunk boundaries', async () => {
  const upstream = chunk(' Hello') + chunk(' world') + usageChunk + 'data: [DONE]\n\n';
  const expected = plain(' Hello') + plain(' world') + 'data: [DONE]\n\n';
  for (const size of [1, 7, 64, upstream.length]) {
    const pieces: Buffer[] = [];
    for (let i = 0; i < upstream.length; i += size) pieces.push(Buffer.from(upstream.slice(i, i + size)));
    const stripper = new UsageStripper();
    const out = await text(Readable.from(pieces).pipe(stripper));
    assert.equal(out, expected, `pieces of ${size} bytes`);
    assert.deepEqual(stripper.usage, { promptTokens: 8, completionTokens: 2, totalTokens: 10 });
  }
});

test('a character cut between two chunks comes out whole', async () => {
  // Upstream bytes may split a multi-byte character anywhere: é is 2 bytes, 世 3, 🙂 4.
  const upstream = Buffer.from(chunk(' héllo 世界 🙂') + usageChunk + 'data: [DONE]\n\n');
  const pieces = Array.from({ length: upstream.length }, (_, i) => upstream.subarray(i, i + 1));
  const out = await text(Readable.from(pieces).pipe(new UsageStripper()));
  assert.equal(out, plain(' héllo 世界 🙂') + 'data: [DONE]\n\n');
});

test('passes a stream without usage through untouched', async () => {
  const upstream = plain(' a') + 'data: [DONE]\n\n';
  const stripper = new UsageStripper();
  assert.equal(await text(Readable.from([Buffer.from(upstream)]).pipe(stripper)), upstream);
  assert.equal(stripper.usage, undefined);
});

test('asks for usage only on streams that did not ask, keeping other stream options', () => {
  assert.equal(withUsageRequested({ stream: false }), undefined);
  assert.equal(withUsageRequested({ stream: true, stream_options: { include_usage: true } }), undefined);
  assert.deepEqual(JSON.parse(String(withUsageRequested({ stream: true, messages: [], stream_options: { other: 1 } }))), {
    stream: true,
    messages: [],
    stream_options: { other: 1, include_usage: true },
  });
});

test('stream_options goes only to api-versions that accept it', () => {
  assert.equal(acceptsStreamOptions('2024-10-21'), true);
  assert.equal(acceptsStreamOptions('2024-09-01-preview'), true);
  assert.equal(acceptsStreamOptions('2024-08-01-preview'), false);
  assert.equal(acceptsStreamOptions('2024-06-01'), false);
  assert.equal(acceptsStreamOptions('preview'), true);
});
