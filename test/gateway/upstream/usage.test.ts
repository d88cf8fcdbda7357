import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UsageTail } from '../../../gateway/upstream/usage.ts';

const body = JSON.stringify({
  choices: [{ message: { content: 'x'.repeat(6000) } }],
  usage: { completion_tokens: 5, completion_tokens_details: { reasoning_tokens: 0 }, prompt_tokens: 8, total_tokens: 13 },
});

test('reads usage from the tail of a JSON body, whatever the chunking', () => {
  for (const size of [1, 100, 4096, body.length]) {
    const tail = new UsageTail();
    for (let i = 0; i < body.length; i += size) tail.push(Buffer.from(body.slice(i, i + size)));
    assert.deepEqual(tail.usage(), { promptTokens: 8, completionTokens: 5, totalTokens: 13 }, `chunks of ${size}`);
  }
});

test('takes the last usage of a stream and ignores usage:null', () => {
  const tail = new UsageTail();
  tail.push(Buffer.from('data: {"choices":[],"usage":null}\n\n'));
  tail.push(Buffer.from('data: {"choices":[],"usage":{"completion_tokens":2,"prompt_tokens":3,"total_tokens":5}}\n\ndata: [DONE]\n\n'));
  assert.deepEqual(tail.usage(), { promptTokens: 3, completionTokens: 2, totalTokens: 5 });
});

test('no usage, no answer', () => {
  const tail = new UsageTail();
  tail.push(Buffer.from('{"error":{"code":"500"}}'));
  assert.equal(tail.usage(), undefined);
});

test('a usage:null after the usage object, and usage quoted in the text, are passed over', () => {
  const tail = new UsageTail();
  tail.push(Buffer.from('data: {"choices":[],"usage":{"completion_tokens":2,"prompt_tokens":3,"total_tokens":5}}\n\n'));
  tail.push(
    Buffer.from('data: {"choices":[{"delta":{"content":"\\"usage\\":{\\"prompt_tokens\\":1}"}}],"usage":null}\n\ndata: [DONE]\n\n'),
  );
  assert.deepEqual(tail.usage(), { promptTokens: 3, completionTokens: 2, totalTokens: 5 });
});

test('a stream keeps nothing while its chunks carry usage:null, then only its usage chunk on', () => {
  const tail = new UsageTail();
  const chunk = Buffer.from('data: {"choices":[{"delta":{"content":"word"}}],"id":"x","usage":null}\n\n');
  for (let i = 0; i < 100; i++) tail.push(Buffer.from(chunk));
  assert.equal(tail.keptBytes, 0);
  const usageChunk = Buffer.from('data: {"choices":[],"usage":{"completion_tokens":100,"prompt_tokens":3,"total_tokens":103}}\n\n');
  tail.push(usageChunk);
  tail.push(Buffer.from('data: [DONE]\n\n'));
  assert.equal(tail.keptBytes, usageChunk.length + 'data: [DONE]\n\n'.length);
  assert.deepEqual(tail.usage(), { promptTokens: 3, completionTokens: 100, totalTokens: 103 });
});

test('a usage key cut between chunks, even into single bytes, is still found', () => {
  const stream =
    'data: {"choices":[],"usage":null}\n\ndata: {"choices":[],"usage":{"completion_tokens":2,"prompt_tokens":3,"total_tokens":5}}\n\ndata: [DONE]\n\n';
  const at = stream.lastIndexOf('"usage"');
  for (const cut of [at + 1, at + 3, at + 6]) {
    const tail = new UsageTail();
    tail.push(Buffer.from(stream.slice(0, cut)));
    tail.push(Buffer.from(stream.slice(cut)));
    assert.deepEqual(tail.usage(), { promptTokens: 3, completionTokens: 2, totalTokens: 5 }, `cut at ${cut - at}`);
  }
  const bytewise = new UsageTail();
  for (const byte of Buffer.from(stream)) bytewise.push(Buffer.from([byte]));
  assert.deepEqual(bytewise.usage(), { promptTokens: 3, completionTokens: 2, totalTokens: 5 });
});
