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
