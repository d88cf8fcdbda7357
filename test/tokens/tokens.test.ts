/**
 * Request-cost estimation (shared/tokens). Expected prompt counts come from three places: the
 * reference notes' checked data point, the OpenAI cookbook's examples whose counts were confirmed
 * by the API, and sums worked out by hand. The exact counter itself is checked against js-tiktoken
 * in tokens-parity.test.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  countTokens,
  DEFAULT_EXACT_UP_TO_CHARS,
  encodingForModel,
  estimateRequest,
  type Encoding,
  type EstimateOptions,
  type Operation,
} from '../../shared/tokens/index.ts';
import { tokenCounterFor } from '../../shared/tokens/tokenizers.ts';
import { IMAGE_TOKENS_LOW_DETAIL, IMAGE_TOKENS_OTHER } from '../../shared/tokens/prompt-content.ts';

const O200K: EstimateOptions = { encoding: 'o200k_base', defaultMaxTokens: 16 };
const CL100K: EstimateOptions = { encoding: 'cl100k_base', defaultMaxTokens: 16 };

/** OpenAI cookbook, "How to count tokens with tiktoken", section 6: the API reported 129 (gpt-4*) and 124 (gpt-4o*). */
const COOKBOOK_MESSAGES = [
  { role: 'system', content: 'You are a helpful, pattern-following assistant that translates corporate jargon into plain English.' },
  { role: 'system', name: 'example_user', content: 'New synergies will help drive top-line growth.' },
  { role: 'system', name: 'example_assistant', content: 'Things working well together will increase revenue.' },
  {
    role: 'system',
    name: 'example_user',
    content: "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
  },
  { role: 'system', name: 'example_assistant', content: "Let's talk later when we're less busy about how to do better." },
  { role: 'user', content: "This late pivot means we don't have time to boil the ocean for the client deliverable." },
];

test('encodingForModel picks the vocabulary per model family, Azure names included', () => {
  const cases: [string, Encoding][] = [
    ['gpt-4o', 'o200k_base'],
    ['gpt-4o-2024-08-06', 'o200k_base'],
    ['gpt-4o-mini', 'o200k_base'],
    ['gpt-4.1', 'o200k_base'],
    ['gpt-4.1-nano', 'o200k_base'],
    ['gpt-4.5-preview', 'o200k_base'],
    ['gpt-5', 'o200k_base'],
    ['gpt-5-mini', 'o200k_base'],
    ['o1', 'o200k_base'],
    ['o1-preview', 'o200k_base'],
    ['o3-mini', 'o200k_base'],
    ['o4-mini', 'o200k_base'],
    ['chatgpt-4o-latest', 'o200k_base'],
    ['gpt-4', 'cl100k_base'],
    ['gpt-4-0613', 'cl100k_base'],
    ['gpt-4-32k', 'cl100k_base'],
    ['gpt-4-turbo', 'cl100k_base'],
    ['gpt-4-turbo-2024-04-09', 'cl100k_base'],
    ['gpt-35-turbo', 'cl100k_base'],
    ['gpt-35-turbo-16k', 'cl100k_base'],
    ['gpt-35-turbo-instruct', 'cl100k_base'],
    ['gpt-3.5-turbo', 'cl100k_base'],
    ['text-embedding-ada-002', 'cl100k_base'],
    ['text-embedding-3-small', 'cl100k_base'],
    ['text-embedding-3-large', 'cl100k_base'],
    ['GPT-4-Turbo', 'cl100k_base'],
    ['azure/gpt-35-turbo', 'cl100k_base'],
    ['some-future-model', 'o200k_base'],
    ['', 'o200k_base'],
  ];
  for (const [model, encoding] of cases) assert.equal(encodingForModel(model), encoding, model);
  assert.equal(encodingForModel(42 as unknown as string), 'o200k_base');
});

test('one short user message costs 8 prompt tokens with o200k (reference notes §7 checked data point)', () => {
  const estimate = estimateRequest('chat/completions', { messages: [{ role: 'user', content: 'Hello' }] }, O200K);
  // 3 per message + "user" (1) + "Hello" (1) + 3 to prime the reply
  assert.deepEqual(estimate, { promptTokens: 8, maxOutputTokens: 16, total: 24, method: 'tokenizer' });
});

test('the cookbook conversation matches the prompt tokens the API reported', () => {
  assert.equal(estimateRequest('chat/completions', { messages: COOKBOOK_MESSAGES }, CL100K).promptTokens, 129);
  assert.equal(estimateRequest('chat/completions', { messages: COOKBOOK_MESSAGES }, O200K).promptTokens, 124);
});

test('a multi-message chat is 3 per message + its string values + 3, counted by hand', () => {
  const messages = [
    { role: 'system', content: 'You are a helpful assistant.' }, // 1 + 6
    { role: 'user', content: 'What is the capital of France?' }, // 1 + 7
    { role: 'assistant', content: 'Paris.' }, // 1 + 2
    { role: 'user', content: 'And of Germany?' }, // 1 + 4
  ];
  const byHand = 4 * 3 + (1 + 6) + (1 + 7) + (1 + 2) + (1 + 4) + 3;
  assert.equal(byHand, 38);
  const viaEncoder = messages.reduce((sum, m) => sum + 3 + countTokens(m.role, 'o200k_base') + countTokens(m.content, 'o200k_base'), 3);
  assert.equal(viaEncoder, byHand);
  assert.equal(estimateRequest('chat/completions', { messages }, O200K).promptTokens, byHand);
  assert.equal(estimateRequest('chat/completions', { messages }, CL100K).promptTokens, byHand); // same counts in cl100k
});

test('a name costs its tokens plus 1', () => {
  const without = estimateRequest('chat/completions', { messages: [{ role: 'user', content: 'Hello' }] }, O200K).promptTokens;
  const withName = estimateRequest(
    'chat/completions',
    { messages: [{ role: 'user', name: 'example_user', content: 'Hello' }] },
    O200K,
  ).promptTokens;
  assert.equal(withName - without, countTokens('example_user', 'o200k_base') + 1);
  assert.equal(withName - without, 3);
});

test('text parts count, images cost a flat estimate, other parts nothing', () => {
  const base = estimateRequest('chat/completions', { messages: [{ role: 'user', content: 'Describe this image.' }] }, O200K).promptTokens;
  const body = {
    messages: [
      {
        role: 'user',
        content: [
          { type: 'text', text: 'Describe this image.' },
          { type: 'image_url', image_url: { url: 'https://example.com/a.png', detail: 'low' } },
          { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
          { type: 'input_audio', input_audio: { data: 'UklGRg==', format: 'wav' } },
        ],
      },
    ],
  };
  assert.equal(estimateRequest('chat/completions', body, O200K).promptTokens, base + IMAGE_TOKENS_LOW_DETAIL + IMAGE_TOKENS_OTHER);
  assert.equal(IMAGE_TOKENS_LOW_DETAIL, 85);
  assert.equal(IMAGE_TOKENS_OTHER, 765);
});

test('tool definitions count as their JSON text: a little above what the API counts', () => {
  // OpenAI cookbook, section 7: the API reported 105 (gpt-4) and 101 (gpt-4o) prompt tokens for this request.
  const tools = [
    {
      type: 'function',
      function: {
        name: 'get_current_weather',
        description: 'Get the current weather in a given location',
        parameters: {
          type: 'object',
          properties: {
            location: { type: 'string', description: 'The city and state, e.g. San Francisco, CA' },
            unit: { type: 'string', description: 'The unit of temperature to return', enum: ['celsius', 'fahrenheit'] },
          },
          required: ['location'],
        },
      },
    },
  ];
  const messages = [
    { role: 'system', content: 'You are a helpful assistant that can answer to questions about the weather.' },
    { role: 'user', content: "What's the weather like in San Francisco?" },
  ];
  const withoutTools = estimateRequest('chat/completions', { messages }, O200K).promptTokens;
  const withTools = estimateRequest('chat/completions', { messages, tools }, O200K).promptTokens;
  assert.equal(withTools - withoutTools, countTokens(JSON.stringify(tools[0]), 'o200k_base'));
  for (const [options, apiCount] of [
    [CL100K, 105],
    [O200K, 101],
  ] as const) {
    const estimate = estimateRequest('chat/completions', { messages, tools }, options).promptTokens;
    assert.ok(estimate >= apiCount && estimate <= apiCount * 1.25, `${options.encoding}: ${estimate} vs API ${apiCount}`);
  }
});

test('output budget: n multiplies, the default fills in, max_completion_tokens wins', () => {
  const messages = [{ role: 'user', content: 'Hello' }];
  const output = (body: Record<string, unknown>, operation: Operation = 'chat/completions'): number =>
    estimateRequest(operation, { messages, ...body }, { encoding: 'o200k_base', defaultMaxTokens: 256 }).maxOutputTokens;

  assert.equal(output({}), 256, 'default when absent');
  assert.equal(output({ max_tokens: 100 }), 100);
  assert.equal(output({ max_tokens: 100, n: 3 }), 300, 'n multiplies');
  assert.equal(output({ n: 2 }), 512, 'n multiplies the default too');
  assert.equal(output({ max_completion_tokens: 50, max_tokens: 100 }), 50, 'max_completion_tokens takes precedence');
  assert.equal(output({ max_completion_tokens: null, max_tokens: 100 }), 100);
  assert.equal(output({ max_tokens: 100, best_of: 5 }), 100, 'best_of is a completions parameter');
  assert.equal(output({ prompt: 'x', max_tokens: 100, n: 2, best_of: 5 }, 'completions'), 500, 'best_of when larger than n');
  assert.equal(output({ prompt: 'x', max_tokens: 100, n: 4, best_of: 2 }, 'completions'), 400);
  assert.equal(output({ input: 'x', max_tokens: 100 }, 'embeddings'), 0);

  const total = estimateRequest('chat/completions', { messages, max_tokens: 100, n: 2 }, O200K);
  assert.equal(total.total, total.promptTokens + 200);
});

test('nonsense output fields fall back to the default (or to 1 choice)', () => {
  const output = (body: Record<string, unknown>): number =>
    estimateRequest('chat/completions', { messages: [], ...body }, { encoding: 'o200k_base', defaultMaxTokens: 256 }).maxOutputTokens;
  for (const bad of [-5, 0, 0.5, '100', null, true, {}, [], Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.equal(output({ max_tokens: bad }), 256, `max_tokens ${String(bad)}`);
    assert.equal(output({ max_completion_tokens: bad }), 256, `max_completion_tokens ${String(bad)}`);
    assert.equal(output({ max_tokens: 10, n: bad }), 10, `n ${String(bad)}`);
  }
  assert.equal(output({ max_tokens: 10.9 }), 10, 'fractions round down');
  assert.equal(output({ max_tokens: 1e300, n: 1e300 }), Number.MAX_SAFE_INTEGER, 'capped to stay an exact integer');
  const badDefault = estimateRequest('chat/completions', {}, { encoding: 'o200k_base', defaultMaxTokens: -1 });
  assert.equal(badDefault.maxOutputTokens, 0);
});

test('completions: prompt as a string, strings or token ids', () => {
  const prompt = (value: unknown): number => estimateRequest('completions', { prompt: value }, O200K).promptTokens;
  assert.equal(prompt('Say this is a test'), 5);
  assert.equal(prompt(['Say this is a test', 'hello world']), 5 + 2);
  assert.equal(prompt([1, 2, 3, 4]), 4, 'one prompt of token ids');
  assert.equal(
    prompt([
      [1, 2, 3],
      [4, 5],
    ]),
    5,
    'several prompts of token ids',
  );
  assert.equal(estimateRequest('completions', { prompt: 'Say this is a test', suffix: 'hello world' }, O200K).promptTokens, 7);
  assert.equal(estimateRequest('completions', { prompt: 'Say this is a test' }, O200K).maxOutputTokens, 16);
});

test('embeddings: input as a string, strings or token ids; no output', () => {
  const input = (value: unknown): number => estimateRequest('embeddings', { input: value }, CL100K).promptTokens;
  assert.equal(input('The quick brown fox jumps over the lazy dog.'), 10);
  assert.equal(input(['The quick brown fox jumps over the lazy dog.', 'hello world']), 12);
  assert.equal(input([101, 102, 103]), 3);
  assert.equal(input([[101, 102], [103], []]), 3);
  const estimate = estimateRequest('embeddings', { input: 'hello world', max_tokens: 100, n: 5 }, CL100K);
  assert.deepEqual(estimate, { promptTokens: 2, maxOutputTokens: 0, total: 2, method: 'tokenizer' });
});

test('odd bodies never throw and give finite non-negative integers', () => {
  const cyclic: Record<string, unknown> = { role: 'user', content: 'hi' };
  cyclic.self = cyclic;
  const bodies: unknown[] = [
    undefined,
    null,
    42,
    'a string body',
    [],
    [{ role: 'user', content: 'hi' }],
    {},
    { messages: 'not an array' },
    { messages: { 0: { role: 'user', content: 'hi' } } },
    { messages: [null, 1, 'text', [], true] },
    { messages: [{ role: 'user', content: null }, { content: 5 }, { role: 7, name: 8 }, {}] },
    { messages: [{ role: 'user', content: [null, 1, 'loose string', { type: 'text', text: 5 }, { type: 'image_url' }, []] }] },
    {
      messages: [
        { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] },
      ],
    },
    { messages: [cyclic] },
    { messages: [{ role: 'user', content: 'hi', extra: 10n }] },
    { tools: 'nope', functions: [null, 3], response_format: { json_schema: 7n } },
    { prompt: {}, input: { a: 1 }, suffix: 3 },
    { prompt: [null, {}, [1, 'x'], 'ok'] },
    { input: [[], {}, null, 'ok', 3] },
    { max_tokens: '12', n: '3', best_of: -2, max_completion_tokens: {} },
    { messages: [{ role: 'user', content: '<|endoftext|> special tokens are plain text <|endofprompt|>' }] },
  ];
  for (const operation of ['chat/completions', 'completions', 'embeddings', 'responses', 'unknown' as Operation] as const) {
    for (const body of bodies) {
      const estimate = estimateRequest(operation, body, O200K);
      for (const value of [estimate.promptTokens, estimate.maxOutputTokens, estimate.total]) {
        assert.ok(Number.isSafeInteger(value) && value >= 0, `${operation} ${String(value)}`);
      }
      assert.equal(estimate.total, estimate.promptTokens + estimate.maxOutputTokens);
    }
  }
  assert.equal(estimateRequest('chat/completions', { messages: 'not an array' }, O200K).promptTokens, 3, 'only the reply priming');
  assert.equal(estimateRequest('chat/completions', { messages: [{ role: 'user', content: null }] }, O200K).promptTokens, 3 + 1 + 3);
  // <|endoftext|> is 7 tokens as text (js-tiktoken: encode(text, [], [])), not one control token
  assert.equal(countTokens('<|endoftext|>', 'o200k_base'), 7);
});

/** A realistic long prompt: the openai SDK README (English prose with TypeScript samples, about 28 KB). */
function realisticLongText(): string {
  return readFileSync(new URL('../../node_modules/openai/README.md', import.meta.url), 'utf8');
}

test('above the threshold the calibrated char estimate is used, within ±25% of the exact count', () => {
  const text = realisticLongText();
  assert.ok(text.length > DEFAULT_EXACT_UP_TO_CHARS);
  const body = { messages: [{ role: 'user', content: text }] };
  for (const encoding of ['o200k_base', 'cl100k_base'] as const) {
    const estimated = estimateRequest('chat/completions', body, { encoding, defaultMaxTokens: 0 });
    assert.equal(estimated.method, 'chars');
    const exact = estimateRequest('chat/completions', body, { encoding, defaultMaxTokens: 0, exactUpToChars: Number.POSITIVE_INFINITY });
    assert.equal(exact.method, 'tokenizer');
    assert.equal(exact.promptTokens, 3 + 1 + countTokens(text, encoding) + 3);
    const error = estimated.promptTokens / exact.promptTokens - 1;
    assert.ok(Math.abs(error) <= 0.25, `${encoding}: ${(error * 100).toFixed(1)}%`);
  }
});

test('the threshold counts all prompt text of the request, and can be set per call', () => {
  const half = 'word '.repeat(Math.ceil(DEFAULT_EXACT_UP_TO_CHARS / 10)); // just over half the threshold
  const oneMessage = { messages: [{ role: 'user', content: half }] };
  const twoMessages = {
    messages: [
      { role: 'user', content: half },
      { role: 'user', content: half },
    ],
  };
  assert.equal(estimateRequest('chat/completions', oneMessage, O200K).method, 'tokenizer');
  assert.equal(estimateRequest('chat/completions', twoMessages, O200K).method, 'chars', 'the sum is over the threshold');
  assert.equal(estimateRequest('chat/completions', oneMessage, { ...O200K, exactUpToChars: 0 }).method, 'chars');
  assert.equal(estimateRequest('chat/completions', oneMessage, { ...O200K, exactUpToChars: -1 }).method, 'tokenizer', 'nonsense: default');
  assert.equal(estimateRequest('chat/completions', twoMessages, { ...O200K, exactUpToChars: 1e9 }).method, 'tokenizer');
  // Fixed costs stay exact; only text is estimated: "user" is 4 chars, ceil(4 / 4.11) = 1 token.
  const estimated = estimateRequest('chat/completions', { messages: [{ role: 'user', content: '' }] }, { ...O200K, exactUpToChars: 0 });
  assert.deepEqual([estimated.promptTokens, estimated.method], [3 + 1 + 3, 'chars']);
});

test('text that needs heavy merging falls back to the char estimate even under the size threshold', () => {
  // Each of these is one long pre-tokenizer piece: js-tiktoken needs about 0.1–1 s per KB for them.
  for (const text of [' '.repeat(8_000), 'a'.repeat(8_000), '我们今天去公园散步天气很好'.repeat(600)]) {
    assert.ok(text.length <= DEFAULT_EXACT_UP_TO_CHARS);
    const estimate = estimateRequest('chat/completions', { messages: [{ role: 'user', content: text }] }, O200K);
    assert.equal(estimate.method, 'chars', JSON.stringify(text.slice(0, 10)));
  }
  // a few sentences of Chinese are still counted exactly
  const shortChinese = '我们今天去公园散步，天气很好。'.repeat(20);
  const estimate = estimateRequest('chat/completions', { messages: [{ role: 'user', content: shortChinese }] }, O200K);
  assert.equal(estimate.method, 'tokenizer');
  assert.equal(estimate.promptTokens, 3 + 1 + countTokens(shortChinese, 'o200k_base') + 3);
});

test('one counter per encoding, built once', () => {
  assert.equal(tokenCounterFor('o200k_base'), tokenCounterFor('o200k_base'));
  assert.notEqual(tokenCounterFor('o200k_base'), tokenCounterFor('cl100k_base'));
});

test('a whole text seen again is counted from memory, within a bound: a repeated system prompt costs no merge work', () => {
  const counter = tokenCounterFor('o200k_base');
  // Unbroken Chinese needs a merge for nearly every piece: with no merge budget it cannot be counted.
  const seed = `${Date.now()}-${Math.random()}`;
  const prompt = `${seed} ${'统一码联盟发布了新的版本'.repeat(30)}`;
  const exact = counter.countWithin([prompt], Infinity);
  assert.ok(exact !== undefined && exact > 0);
  assert.equal(counter.countWithin([prompt], 0), exact, 'seen before: counted without merging');
  assert.equal(counter.countWithin([prompt.slice(1)], 0), undefined, 'another text still needs its merges');
  // Hundreds of other texts later, it is forgotten: the memory is bounded.
  for (let i = 0; i < 300; i++) counter.countWithin([`${seed} text ${i} ${'word '.repeat(60)}`], Infinity);
  assert.equal(counter.countWithin([prompt], 0), undefined, 'forgotten after many others');
  assert.equal(counter.countWithin([prompt], Infinity), exact);
});
