import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UsageStripper, acceptsStreamOptions, withUsageRequested } from '../../../gateway/upstream/usage-stream.ts';

const chunk = (content: string) =>
  `data: {"choices":[{"content_filter_results":{},"delta":{"content":"${content}"},"finish_reason":null,"index":0,"logprobs":null}],"created":1,"id":"x","model":"m","object":"chat.completion.chunk","system_fingerprint":"fp","usage":null}\n\n`;
const plain = (content: string) => chunk(content).replace(',"usage":null', '');
/** The stripper fed `pieces` one by one: what it sent for each, and at the end, joined. */
function strip(stripper: UsageStripper, pieces: Buffer[]): string {
  const out: Buffer[] = [];
  for (const piece of pieces) {
    const sent = stripper.take(piece);
    if (sent) out.push(Buffer.from(sent));
  }
  const rest = stripper.end();
  if (rest) out.push(rest);
  return Buffer.concat(out).toString('utf8');
}

const usageChunk =
  'data: {"choices":[],"created":1,"id":"x","model":"m","object":"chat.completion.chunk","system_fingerprint":"fp","usage":{"completion_tokens":2,"prompt_tokens":8,"total_tokens":10}}\n\n';

test('strips the usage chunk and the usage:null fields, whatever the chunk boundaries', () => {
  const upstream = chunk(' Hello') + chunk(' world') + usageChunk + 'data: [DONE]\n\n';
  const expected = plain(' Hello') + plain(' world') + 'data: [DONE]\n\n';
  for (const size of [1, 7, 64, upstream.length]) {
    const pieces: Buffer[] = [];
    for (let i = 0; i < upstream.length; i += size) pieces.push(Buffer.from(upstream.slice(i, i + size)));
    const stripper = new UsageStripper();
    const out = strip(stripper, pieces);
    assert.equal(out, expected, `pieces of ${size} bytes`);
    assert.deepEqual(stripper.usage, { promptTokens: 8, completionTokens: 2, totalTokens: 10 });
  }
});

test('a character cut between two chunks comes out whole', () => {
  // Upstream bytes may split a multi-byte character anywhere: é is 2 bytes, 世 3, 🙂 4.
  const upstream = Buffer.from(chunk(' héllo 世界 🙂') + usageChunk + 'data: [DONE]\n\n');
  const pieces = Array.from({ length: upstream.length }, (_, i) => upstream.subarray(i, i + 1));
  const out = strip(new UsageStripper(), pieces);
  assert.equal(out, plain(' héllo 世界 🙂') + 'data: [DONE]\n\n');
});

test('passes a stream without usage through untouched', () => {
  const upstream = plain(' a') + 'data: [DONE]\n\n';
  const stripper = new UsageStripper();
  assert.equal(strip(stripper, [Buffer.from(upstream)]), upstream);
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

test('a chunk of whole events is stripped in place: what is sent is the chunk itself, shorter, never a copy', () => {
  const bytes = Buffer.from(chunk(' a') + chunk(' b'));
  const sent = new UsageStripper().take(bytes);
  assert.ok(sent);
  assert.equal(sent.toString(), plain(' a') + plain(' b'));
  assert.equal(sent.buffer, bytes.buffer);
  assert.equal(sent.byteOffset, bytes.byteOffset);
});

test('events ended by CRLF blank lines, and usage:null first in its object, are stripped across any chunking', () => {
  const first = 'data: {"usage":null,"choices":[],"prompt_filter_results":[]}\r\n\r\n';
  const upstream = first + chunk(' Hi').replace('\n\n', '\r\n\r\n') + usageChunk.replace('\n\n', '\r\n\r\n') + 'data: [DONE]\r\n\r\n';
  const expected =
    'data: {"choices":[],"prompt_filter_results":[]}\r\n\r\n' + plain(' Hi').replace('\n\n', '\r\n\r\n') + 'data: [DONE]\r\n\r\n';
  for (const size of [1, 2, 3, 5, 13, upstream.length]) {
    const bytes = Buffer.from(upstream);
    const pieces: Buffer[] = [];
    for (let i = 0; i < bytes.length; i += size) pieces.push(bytes.subarray(i, i + size));
    const stripper = new UsageStripper();
    assert.equal(strip(stripper, pieces), expected, `pieces of ${size} bytes`);
    assert.deepEqual(stripper.usage, { promptTokens: 8, completionTokens: 2, totalTokens: 10 });
  }
});

test('what only looks like the usage chunk, and usage the model wrote as text, pass on as they came', () => {
  // A usage object in a chunk that has choices is not the final chunk; a quoted "usage":null inside a string is the model's text.
  const notFinal =
    'data: {"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1,"total_tokens":2}}\n\n' +
    'data: {"choices":[{"delta":{"content":"say \\",\\"usage\\":null\\" please"}}]}\n\n';
  const broken = 'data: {"choices":[],"usage":{"prompt_tokens":1,\n\n';
  const stripper = new UsageStripper();
  assert.equal(strip(stripper, [Buffer.from(notFinal + broken)]), notFinal + broken);
  assert.equal(stripper.usage, undefined);
});

test('an event cut before its end waits for the rest; the unfinished tail of a stream goes out at its end', () => {
  const stripper = new UsageStripper();
  const whole = chunk(' a');
  assert.equal(stripper.take(Buffer.from(whole.slice(0, 40))), undefined);
  assert.equal(stripper.take(Buffer.from(whole.slice(40, -1)))?.toString(), undefined);
  assert.equal(stripper.take(Buffer.from(whole.slice(-1)))?.toString(), plain(' a'));
  assert.equal(stripper.take(Buffer.from('data: {"tail":1}')), undefined);
  assert.equal(stripper.end()?.toString(), 'data: {"tail":1}');
});

test('the usage taken out keeps its cached prompt tokens (a provisioned deployment is charged without them)', () => {
  const cachedUsage = usageChunk.replace('"total_tokens":10}', '"total_tokens":10,"prompt_tokens_details":{"cached_tokens":6}}');
  const stripper = new UsageStripper();
  assert.equal(strip(stripper, [Buffer.from(chunk(' Hi') + cachedUsage + 'data: [DONE]\n\n')]), plain(' Hi') + 'data: [DONE]\n\n');
  assert.deepEqual(stripper.usage, { promptTokens: 8, completionTokens: 2, totalTokens: 10, cachedTokens: 6 });
});
