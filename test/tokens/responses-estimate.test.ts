/**
 * Arrival estimate of a Responses API create call (shared/tokens/responses-content.ts). Expected
 * counts are worked out by hand from the chat rule (3 per item, 3 to prime the reply) and the real
 * tokenizer's counts of each string, checked with countTokens where a sum would hide a mistake.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { countTokens, DEFAULT_EXACT_UP_TO_CHARS, estimateRequest, type EstimateOptions } from '../../shared/tokens/index.ts';
import { IMAGE_TOKENS_LOW_DETAIL, IMAGE_TOKENS_OTHER } from '../../shared/tokens/prompt-content.ts';

const O200K: EstimateOptions = { encoding: 'o200k_base', defaultMaxTokens: 16 };
const CL100K: EstimateOptions = { encoding: 'cl100k_base', defaultMaxTokens: 16 };

const prompt = (body: unknown, options: EstimateOptions = O200K): number => estimateRequest('responses', body, options).promptTokens;
/** What one item adds to a request that holds only it: the estimate less the 3 that prime the reply. */
const itemCost = (item: unknown, options: EstimateOptions = O200K): number => prompt({ input: [item] }, options) - 3;

test('input as a string is one user message; instructions a system message, as chat counts them', () => {
  // 3 per message + "user" (1) + "Hello" (1) + 3 to prime the reply: chat's one-message count
  assert.deepEqual(estimateRequest('responses', { model: 'gpt-4o', input: 'Hello' }, O200K), {
    promptTokens: 8,
    maxOutputTokens: 16,
    total: 24,
    method: 'tokenizer',
  });
  // + 3 + "system" (1) + "You are terse." (4)
  assert.equal(countTokens('You are terse.', 'o200k_base'), 4);
  assert.equal(prompt({ instructions: 'You are terse.', input: 'Hello' }), 16);
  const chat = {
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Hello' },
    ],
  };
  for (const options of [O200K, CL100K]) {
    assert.equal(
      prompt({ instructions: 'You are terse.', input: 'Hello' }, options),
      estimateRequest('chat/completions', chat, options).promptTokens,
    );
  }
  assert.equal(prompt({ instructions: null, input: 'Hello' }), 8, 'instructions: null is absent');
  assert.equal(prompt({}), 3, 'no input: only the priming');
});

test('message items: 3 + role + content; ids, status, phase and annotations are not text', () => {
  const input = [
    { role: 'developer', content: 'You are terse.' }, // 3 + 1 + 4
    { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'What is the weather in Paris?' }] }, // 3 + 1 + 7
    {
      type: 'message',
      id: 'msg_0123456789abcdef',
      status: 'completed',
      phase: 'final_answer',
      role: 'assistant',
      content: [{ type: 'output_text', text: 'Paris is sunny.', annotations: [{ type: 'url_citation', url: 'https://example.com/' }] }], // 3 + 1 + 4
    },
  ];
  assert.deepEqual(
    ['What is the weather in Paris?', 'Paris is sunny.'].map((text) => countTokens(text, 'o200k_base')),
    [7, 4],
  );
  const byHand = 3 + 1 + 4 + (3 + 1 + 7) + (3 + 1 + 4) + 3;
  assert.equal(byHand, 30);
  assert.equal(prompt({ input }), byHand);
  assert.equal(prompt({ input }, CL100K), byHand, 'same counts in cl100k');
  // several parts of one message each count
  const twoParts = {
    role: 'user',
    content: [
      { type: 'input_text', text: 'Hello' },
      { type: 'output_text', text: 'Paris is sunny.' },
    ],
  };
  assert.equal(itemCost(twoParts), 3 + 1 + 1 + 4);
  // a refusal part counts its refusal text
  assert.equal(itemCost({ role: 'assistant', content: [{ type: 'refusal', refusal: 'I can not help with that.' }] }), 3 + 1 + 7);
});

test('images cost the flat chat estimate (low detail or not), files nothing', () => {
  const withParts = (...parts: unknown[]): number =>
    itemCost({ role: 'user', content: [{ type: 'input_text', text: 'Describe this image.' }, ...parts] });
  const base = withParts();
  assert.equal(base, 3 + 1 + 4);
  assert.equal(withParts({ type: 'input_image', image_url: 'https://example.com/a.png', detail: 'low' }), base + IMAGE_TOKENS_LOW_DETAIL);
  for (const detail of ['high', 'auto', 'original', undefined]) {
    assert.equal(withParts({ type: 'input_image', file_id: 'file-abc', detail }), base + IMAGE_TOKENS_OTHER, String(detail));
  }
  assert.equal(
    withParts({ type: 'input_image', image_url: { url: 'x', detail: 'low' } }),
    base + IMAGE_TOKENS_OTHER,
    'detail is on the part',
  );
  assert.equal(
    withParts(
      { type: 'input_file', file_id: 'file-abc', filename: 'report.pdf' },
      { type: 'input_file', file_data: 'data:application/pdf;base64,JVBERi0=' },
    ),
    base,
    'files are not counted',
  );
  assert.equal(
    withParts({ type: 'input_image', detail: 'low' }, { type: 'input_image', image_url: 'data:image/png;base64,iVBORw0KGgo=' }),
    base + IMAGE_TOKENS_LOW_DETAIL + IMAGE_TOKENS_OTHER,
  );
});

test('function_call counts name + arguments; function_call_output its output, text or parts', () => {
  const call = {
    type: 'function_call',
    id: 'fc_0123456789abcdef',
    call_id: 'call_0123456789abcdef',
    name: 'get_weather',
    arguments: '{"city":"Paris"}',
    status: 'completed',
  };
  assert.deepEqual([countTokens('get_weather', 'o200k_base'), countTokens('{"city":"Paris"}', 'o200k_base')], [2, 5]);
  assert.equal(itemCost(call), 3 + 2 + 5);

  const textOutput = { type: 'function_call_output', call_id: 'call_0123456789abcdef', output: '{"temperature":21}' };
  assert.equal(itemCost(textOutput), 3 + 5);

  // the pool's tokenizer: "Sunny, 21 °C." is 7 tokens in o200k, 8 in cl100k
  const partsOutput = {
    type: 'function_call_output',
    call_id: 'call_0123456789abcdef',
    output: [
      { type: 'input_text', text: 'Sunny, 21 °C.' },
      { type: 'input_image', image_url: 'https://example.com/map.png', detail: 'low' },
      { type: 'input_file', file_id: 'file-abc' },
    ],
  };
  assert.equal(itemCost(partsOutput, O200K), 3 + 7 + IMAGE_TOKENS_LOW_DETAIL);
  assert.equal(itemCost(partsOutput, CL100K), 3 + 8 + IMAGE_TOKENS_LOW_DETAIL);

  assert.equal(prompt({ input: [{ role: 'user', content: 'Hello' }, call, textOutput] }), 3 + 1 + 1 + (3 + 2 + 5) + (3 + 5) + 3);
});

test('reasoning items count their summaries, never encrypted_content', () => {
  const reasoning = (encrypted: string): unknown => ({
    type: 'reasoning',
    id: 'rs_0123456789abcdef',
    summary: [
      { type: 'summary_text', text: 'Checking the forecast.' },
      { type: 'summary_text', text: 'Paris is sunny.' },
    ],
    encrypted_content: encrypted,
  });
  assert.equal(countTokens('Checking the forecast.', 'o200k_base'), 4);
  assert.equal(itemCost(reasoning('')), 3 + 4 + 4);
  // A long opaque blob neither counts nor pushes the estimate off the exact tokenizer.
  const blob = 'gAAAAABo' + 'Zk3xQ9vT_rW2yLp8'.repeat(2 * DEFAULT_EXACT_UP_TO_CHARS);
  const estimate = estimateRequest('responses', { input: [reasoning(blob)] }, O200K);
  assert.deepEqual([estimate.promptTokens, estimate.method], [3 + 4 + 4 + 3, 'tokenizer']);
  assert.equal(itemCost({ type: 'reasoning', summary: [], encrypted_content: blob }), 3);
  // the same for any item that carries one: a compaction item costs its overhead and {"type":"compaction"}
  assert.equal(
    itemCost({ type: 'compaction', id: 'cmp_1', encrypted_content: blob }),
    3 + countTokens('{"type":"compaction"}', 'o200k_base'),
  );
});

test('item references cost nothing: their content is held upstream', () => {
  assert.equal(itemCost({ type: 'item_reference', id: 'msg_0123456789abcdef' }), 0, 'not even the item overhead');
  assert.equal(prompt({ input: [{ type: 'item_reference', id: 'msg_1' }] }), 3);
  assert.equal(prompt({ input: [{ id: 'msg_1' }, { type: null, id: 'msg_2' }] }), 3, 'type may be left out or null');
  assert.equal(
    prompt({
      input: [
        { type: 'item_reference', id: 'msg_1' },
        { role: 'user', content: 'Hello' },
      ],
    }),
    3 + 1 + 1 + 3,
  );
});

test('other items count as their JSON without ids, plus the item overhead', () => {
  const json = (value: unknown): number => countTokens(JSON.stringify(value), 'o200k_base');
  const webSearch = {
    id: 'ws_0123456789abcdef',
    type: 'web_search_call',
    status: 'completed',
    action: { type: 'search', query: 'weather Paris' },
  };
  assert.equal(
    itemCost(webSearch),
    3 + json({ type: 'web_search_call', status: 'completed', action: { type: 'search', query: 'weather Paris' } }),
  );
  const approval = { type: 'mcp_approval_response', id: 'mcpa_1', approval_request_id: 'mcpr_0123456789abcdef', approve: true };
  assert.equal(itemCost(approval), 3 + json({ type: 'mcp_approval_response', approve: true }));
  const custom = { type: 'custom_tool_call', id: 'ctc_1', call_id: 'call_0123456789abcdef', name: 'run', input: 'ls -la' };
  assert.equal(itemCost(custom), 3 + json({ type: 'custom_tool_call', name: 'run', input: 'ls -la' }));
  assert.equal(json({ type: 'custom_tool_call', name: 'run', input: 'ls -la' }), 17);
});

test('tools and a text.format JSON schema count as their JSON, as chat counts tools and response_format', () => {
  const base = prompt({ input: 'Hello' });
  const weather = {
    type: 'function',
    name: 'get_weather',
    description: 'Get the current weather in a given location',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    strict: true,
  };
  const hosted = { type: 'web_search' };
  assert.equal(prompt({ input: 'Hello', tools: [weather] }) - base, countTokens(JSON.stringify(weather), 'o200k_base'));
  assert.equal(prompt({ input: 'Hello', tools: [weather, hosted] }) - base, countTokens(JSON.stringify(weather), 'o200k_base') + 6);
  assert.equal(countTokens('{"type":"web_search"}', 'o200k_base'), 6);

  // text.format flattens chat's response_format.json_schema: the same fields cost the same.
  const jsonSchema = { name: 'weather', schema: { type: 'object', properties: { celsius: { type: 'number' } } }, strict: true };
  const chatBase = estimateRequest('chat/completions', { messages: [{ role: 'user', content: 'Hello' }] }, O200K).promptTokens;
  const chatSchema =
    estimateRequest(
      'chat/completions',
      { messages: [{ role: 'user', content: 'Hello' }], response_format: { type: 'json_schema', json_schema: jsonSchema } },
      O200K,
    ).promptTokens - chatBase;
  assert.equal(countTokens(JSON.stringify(jsonSchema), 'o200k_base'), chatSchema);
  assert.equal(prompt({ input: 'Hello', text: { format: { type: 'json_schema', ...jsonSchema }, verbosity: 'low' } }) - base, chatSchema);
  for (const text of [{ format: { type: 'json_object' } }, { format: { type: 'text' } }, { verbosity: 'low' }, 'json', null]) {
    assert.equal(prompt({ input: 'Hello', text }), base, JSON.stringify(text));
  }
});

test('only the body counts: context held upstream adds nothing to the estimate', () => {
  const base = prompt({ input: 'Hello' });
  const followUp = {
    input: 'Hello',
    previous_response_id: 'resp_0123456789abcdef',
    conversation: { id: 'conv_0123456789abcdef' },
    prompt: { id: 'pmpt_0123456789abcdef', version: '2' },
    store: true,
    metadata: { team: 'search' },
    reasoning: { effort: 'low', summary: 'auto' },
    tool_choice: 'auto',
  };
  assert.equal(prompt(followUp), base);
});

test('output: max_output_tokens when a positive integer, else the default; no n', () => {
  const output = (body: Record<string, unknown>): number =>
    estimateRequest('responses', { input: 'Hello', ...body }, { encoding: 'o200k_base', defaultMaxTokens: 256 }).maxOutputTokens;
  assert.equal(output({}), 256, 'default when absent');
  assert.equal(output({ max_output_tokens: 100 }), 100);
  assert.equal(output({ max_output_tokens: 100, n: 3 }), 100, 'no n in Responses');
  assert.equal(output({ max_tokens: 100, max_completion_tokens: 50 }), 256, "chat's fields are not Responses fields");
  assert.equal(output({ max_output_tokens: 10.9 }), 10, 'fractions round down');
  for (const bad of [-5, 0, 0.5, '100', null, true, {}, [], Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.equal(output({ max_output_tokens: bad }), 256, `max_output_tokens ${String(bad)}`);
  }
  assert.equal(output({ max_output_tokens: 1e300 }), Number.MAX_SAFE_INTEGER, 'capped to stay an exact integer');
  assert.equal(estimateRequest('responses', { input: 'Hello' }, { encoding: 'o200k_base', defaultMaxTokens: -1 }).maxOutputTokens, 0);
  const estimate = estimateRequest('responses', { input: 'Hello', max_output_tokens: 100 }, O200K);
  assert.deepEqual(estimate, { promptTokens: 8, maxOutputTokens: 100, total: 108, method: 'tokenizer' });
});

test('long Responses input goes to the char estimate past the threshold, like chat', () => {
  const half = 'word '.repeat(Math.ceil(DEFAULT_EXACT_UP_TO_CHARS / 10)); // just over half the threshold
  assert.equal(estimateRequest('responses', { input: half }, O200K).method, 'tokenizer');
  const long = { instructions: half, input: [{ type: 'function_call_output', call_id: 'c', output: half }] };
  assert.equal(estimateRequest('responses', long, O200K).method, 'chars', 'instructions and items add up');
  const exact = estimateRequest('responses', long, { ...O200K, exactUpToChars: Number.POSITIVE_INFINITY });
  assert.equal(exact.method, 'tokenizer');
  assert.equal(exact.promptTokens, 3 + 1 + countTokens(half, 'o200k_base') + 3 + countTokens(half, 'o200k_base') + 3);
});

test('odd Responses bodies never throw and count what is countable', () => {
  const cyclic: Record<string, unknown> = { type: 'computer_call', action: { type: 'click' } };
  cyclic.self = cyclic;
  const bodies: unknown[] = [
    { input: {} },
    { input: 42 },
    { input: [null, 1, 'loose string', [], true] },
    { input: [{ role: 'user', content: null }, { role: 7, content: 5 }, { type: 'message' }] },
    { input: [{ role: 'user', content: [null, 1, 'loose', { type: 'input_text', text: 5 }, { type: 'input_image', detail: {} }, []] }] },
    { input: [{ type: 'function_call', name: 3, arguments: { city: 'Paris' } }] },
    {
      input: [
        { type: 'function_call_output', output: 21 },
        { type: 'function_call_output', output: [null, { text: null }] },
      ],
    },
    {
      input: [
        { type: 'reasoning', summary: 'not an array' },
        { type: 'reasoning', summary: [null, 1, { text: 2 }] },
      ],
    },
    { input: [{ type: 42 }, { type: {} }, { type: 'unknown_item', value: 10n }, cyclic] },
    { instructions: ['a'], tools: 'nope', text: { format: { type: 'json_schema', schema: 7n } } },
    { tools: [null, 3, 10n], text: { format: 'json_schema' } },
    { input: '<|endoftext|> special tokens are plain text <|endofprompt|>' },
  ];
  for (const [index, body] of [undefined, null, 42, 'a string body', [], {}, ...bodies].entries()) {
    for (const options of [O200K, CL100K]) {
      const estimate = estimateRequest('responses', body, options);
      for (const value of [estimate.promptTokens, estimate.maxOutputTokens, estimate.total]) {
        assert.ok(Number.isSafeInteger(value) && value >= 0, `body ${index}: ${value}`);
      }
      assert.equal(estimate.total, estimate.promptTokens + estimate.maxOutputTokens);
    }
  }
  assert.equal(prompt({ input: {} }), 3, 'only the priming');
  assert.equal(prompt({ input: [null, 1, 'loose string', [], true] }), 3, 'items must be objects');
  assert.equal(prompt({ input: [{ role: 'user', content: null }] }), 3 + 1 + 3, 'a message without content');
  assert.equal(prompt({ input: [{ role: 7, content: 5 }] }), 3 + 3, 'non-string role and content: the overhead only');
  assert.equal(itemCost({ type: 'function_call', name: 3, arguments: { city: 'Paris' } }), 3);
  assert.equal(itemCost({ type: 'function_call_output', output: [null, { text: null }, 'loose'] }), 3);
  assert.equal(itemCost({ type: 'reasoning', summary: [null, 1, { text: 2 }] }), 3);
  assert.equal(itemCost({ type: 'unknown_item', value: 10n }), 3, 'unserializable JSON: the overhead only');
  assert.equal(itemCost({ type: 42 }), 3 + countTokens('{"type":42}', 'o200k_base'), 'an unknown type counts as other items');
  assert.equal(prompt({ tools: [null, 3, 10n] }), 3 + 1 + 1, 'null and 3 as JSON; the BigInt not');
  assert.equal(prompt({ text: { format: { type: 'json_schema', schema: 7n } } }), 3);
  // <|endoftext|> is 7 tokens as text, not one control token
  assert.equal(prompt({ input: '<|endoftext|>' }), 3 + 1 + 7 + 3);
});
