/**
 * The simulator's Azure surface: routes, auth, bodies and stream format, through the official
 * openai clients (AzureOpenAI on classic routes, OpenAI on /openai/v1) and raw fetch.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AzureOpenAI, OpenAI, AuthenticationError, NotFoundError, BadRequestError } from 'openai';
import { startSimulator, type Simulator } from '../../shared/simulator/index.ts';
import { sharedByTheFile } from '../helpers/file-hooks.ts';

const KEY = 'test-key';
const API_VERSION = '2024-10-21';
const SAFE = { filtered: false, severity: 'safe' };
const CHOICE_FILTER = { hate: SAFE, self_harm: SAFE, sexual: SAFE, violence: SAFE };
const PROMPT_FILTER = [
  {
    prompt_index: 0,
    content_filter_results: { hate: SAFE, jailbreak: { filtered: false, detected: false }, self_harm: SAFE, sexual: SAFE, violence: SAFE },
  },
];
const FIVE_WORDS = ' the quick brown fox jumps';

let sim: Simulator;

sharedByTheFile(
  async () => {
    sim = await startSimulator({
      apiKeys: [KEY, 'second-key'],
      deployments: [
        { name: 'chat', tpm: 100_000, completionTokens: 5, region: 'Sweden Central' },
        { name: 'old-chat', model: 'gpt-35-turbo-0125', completionTokens: 3 },
        { name: 'embed', model: 'text-embedding-3-small', tpm: 100_000 },
      ],
    });
  },
  () => sim?.close(),
);

function azure(deployment = 'chat'): AzureOpenAI {
  return new AzureOpenAI({ endpoint: sim.url, apiKey: KEY, apiVersion: API_VERSION, deployment, maxRetries: 0 });
}
function openai(apiKey = KEY): OpenAI {
  return new OpenAI({ baseURL: sim.url + '/openai/v1', apiKey, maxRetries: 0 });
}
function post(path: string, body: unknown, headers: Record<string, string> = { 'api-key': KEY }): Promise<Response> {
  return fetch(sim.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}
const chatPath = (deployment = 'chat', apiVersion: string | null = API_VERSION) =>
  `/openai/deployments/${deployment}/chat/completions${apiVersion === null ? '' : `?api-version=${apiVersion}`}`;

/** The JSON payloads of an SSE body; asserts the framing (`data: ...` events, blank-line separated). */
function sseEvents(text: string): string[] {
  assert.ok(text.endsWith('\n\n'), 'every event ends with a blank line');
  return text
    .slice(0, -2)
    .split('\n\n')
    .map((event) => {
      assert.ok(event.startsWith('data: '), `event framing: ${event.slice(0, 40)}`);
      return event.slice('data: '.length);
    });
}

describe('chat completions', () => {
  test('non-streaming through AzureOpenAI has the exact Azure shape', async () => {
    const { data, response } = await azure()
      .chat.completions.create({ model: 'ignored', messages: [{ role: 'user', content: 'Hello' }] })
      .withResponse();
    assert.deepEqual(Object.keys(data), [
      'choices',
      'created',
      'id',
      'model',
      'object',
      'prompt_filter_results',
      'system_fingerprint',
      'usage',
    ]);
    assert.match(data.id, /^chatcmpl-[A-Za-z0-9]{29}$/);
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.model, 'gpt-4o-2024-08-06', 'the model version, not the deployment name');
    assert.match(data.system_fingerprint ?? '', /^fp_[0-9a-f]{10}$/);
    assert.ok(Math.abs(data.created - Date.now() / 1000) < 5);
    assert.deepEqual((data as unknown as { prompt_filter_results: unknown }).prompt_filter_results, PROMPT_FILTER);
    assert.deepEqual(data.choices, [
      {
        content_filter_results: CHOICE_FILTER,
        finish_reason: 'stop',
        index: 0,
        logprobs: null,
        message: { annotations: [], content: FIVE_WORDS, refusal: null, role: 'assistant' },
      },
    ]);
    // "Hello" as one user message: 3 + 1 (role) + 1 (content) + 3 priming = 8, Azure's captured value.
    assert.deepEqual(data.usage, {
      completion_tokens: 5,
      completion_tokens_details: { accepted_prediction_tokens: 0, audio_tokens: 0, reasoning_tokens: 0, rejected_prediction_tokens: 0 },
      prompt_tokens: 8,
      prompt_tokens_details: { audio_tokens: 0, cached_tokens: 0 },
      total_tokens: 13,
    });
    assert.equal(response.headers.get('x-ms-region'), 'Sweden Central');
    assert.equal(response.headers.get('content-type'), 'application/json');
  });

  test('n choices and max_tokens capping give finish_reason length', async () => {
    const data = await openai().chat.completions.create({
      model: 'chat',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi there', name: 'ann' },
      ],
      n: 3,
      max_tokens: 2,
    });
    assert.equal(data.choices.length, 3);
    assert.deepEqual(
      data.choices.map((choice) => [choice.index, choice.finish_reason, choice.message.content]),
      [
        [0, 'length', ' the quick'],
        [1, 'length', ' the quick'],
        [2, 'length', ' the quick'],
      ],
    );
    // 3 priming + (3 + system 1 + "Be brief." 3) + (3 + user 1 + "Hi there" 2 + "ann" 1 + name 1) = 18.
    assert.equal(data.usage?.prompt_tokens, 18);
    assert.equal(data.usage?.completion_tokens, 6);
    assert.equal(data.usage?.total_tokens, 24);
  });

  test('max_completion_tokens caps like max_tokens; a cap at the length is still stop', async () => {
    const capped = await openai().chat.completions.create({
      model: 'chat',
      messages: [{ role: 'user', content: 'x' }],
      max_completion_tokens: 4,
    });
    assert.equal(capped.choices[0]?.finish_reason, 'length');
    assert.equal(capped.usage?.completion_tokens, 4);
    const exact = await openai().chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }], max_tokens: 5 });
    assert.equal(exact.choices[0]?.finish_reason, 'stop');
  });

  test('cl100k models count prompts with cl100k_base', async () => {
    const data = await azure('old-chat').chat.completions.create({
      model: 'x',
      messages: [{ role: 'user', content: 'Tokenization differs: 1234567 ⚡' }],
    });
    // The content is 11 tokens in cl100k_base but 10 in o200k_base (js-tiktoken).
    assert.equal(data.model, 'gpt-35-turbo-0125');
    assert.equal(data.usage?.prompt_tokens, 3 + 1 + 11 + 3);
    assert.equal(data.choices[0]?.message.content, ' the quick brown');
  });

  test('streaming through AzureOpenAI assembles the text and reports usage', async () => {
    const stream = await azure().chat.completions.create({
      model: 'x',
      messages: [{ role: 'user', content: 'Hello' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: unknown = undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, FIVE_WORDS);
    assert.equal(chunks, 1 + 1 + 5 + 1 + 1, 'annotations, role, 5 tokens, finish, usage');
    assert.deepEqual(usage, {
      completion_tokens: 5,
      completion_tokens_details: { accepted_prediction_tokens: 0, audio_tokens: 0, reasoning_tokens: 0, rejected_prediction_tokens: 0 },
      prompt_tokens: 8,
      prompt_tokens_details: { audio_tokens: 0, cached_tokens: 0 },
      total_tokens: 13,
    });
  });

  test('streaming through OpenAI on /openai/v1 interleaves n choices', async () => {
    const stream = await openai().chat.completions.create({
      model: 'chat',
      messages: [{ role: 'user', content: 'Hi' }],
      stream: true,
      n: 2,
      max_tokens: 3,
    });
    const texts = ['', ''];
    const finishes: (string | null)[] = [null, null];
    for await (const chunk of stream) {
      for (const choice of chunk.choices) {
        texts[choice.index] += choice.delta.content ?? '';
        if (choice.finish_reason) finishes[choice.index] = choice.finish_reason;
      }
    }
    assert.deepEqual(texts, [' the quick brown', ' the quick brown']);
    assert.deepEqual(finishes, ['length', 'length']);
  });

  test('raw SSE: headers, chunk order and every chunk shape as Azure sends them', async () => {
    const res = await post(chatPath(), {
      messages: [{ role: 'user', content: 'Hello' }],
      stream: true,
      max_tokens: 2,
      stream_options: { include_usage: true },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    const events = sseEvents(await res.text());
    assert.equal(events.length, 7);
    assert.equal(events[6], '[DONE]');
    const chunks = events.slice(0, 6).map((event) => JSON.parse(event) as Record<string, unknown>);
    const [annotations, role, first, second, finish, usage] = chunks as [
      Record<string, unknown>,
      Record<string, unknown>,
      Record<string, unknown>,
      Record<string, unknown>,
      Record<string, unknown>,
      Record<string, unknown>,
    ];
    assert.deepEqual(annotations, {
      choices: [],
      created: 0,
      id: '',
      model: '',
      object: '',
      prompt_filter_results: PROMPT_FILTER,
      usage: null,
    });
    const id = role.id as string;
    assert.match(id, /^chatcmpl-/);
    const identity = {
      created: role.created,
      id,
      model: 'gpt-4o-2024-08-06',
      object: 'chat.completion.chunk',
      system_fingerprint: role.system_fingerprint,
    };
    assert.deepEqual(role, {
      choices: [
        {
          content_filter_results: {},
          delta: { content: '', refusal: null, role: 'assistant' },
          finish_reason: null,
          index: 0,
          logprobs: null,
        },
      ],
      ...identity,
      usage: null,
    });
    assert.deepEqual(Object.keys(role), ['choices', 'created', 'id', 'model', 'object', 'system_fingerprint', 'usage']);
    assert.deepEqual(first, {
      choices: [{ content_filter_results: CHOICE_FILTER, delta: { content: ' the' }, finish_reason: null, index: 0, logprobs: null }],
      ...identity,
      usage: null,
    });
    assert.deepEqual((second.choices as { delta: unknown }[])[0]?.delta, { content: ' quick' });
    assert.deepEqual(finish, {
      choices: [{ content_filter_results: {}, delta: {}, finish_reason: 'length', index: 0, logprobs: null }],
      ...identity,
      usage: null,
    });
    assert.deepEqual(usage, {
      choices: [],
      ...identity,
      usage: {
        completion_tokens: 2,
        completion_tokens_details: { accepted_prediction_tokens: 0, audio_tokens: 0, reasoning_tokens: 0, rejected_prediction_tokens: 0 },
        prompt_tokens: 8,
        prompt_tokens_details: { audio_tokens: 0, cached_tokens: 0 },
        total_tokens: 10,
      },
    });
  });

  test('raw SSE without include_usage has no usage keys at all', async () => {
    const res = await post(chatPath(), { messages: [{ role: 'user', content: 'Hello' }], stream: true, max_tokens: 1 });
    const events = sseEvents(await res.text());
    assert.equal(events.length, 5, 'annotations, role, 1 token, finish, [DONE]');
    for (const event of events.slice(0, -1)) assert.equal('usage' in JSON.parse(event), false);
  });
});

describe('completions and embeddings', () => {
  test('completions: text_completion shape, n per prompt, usage', async () => {
    const data = await azure().completions.create({ model: 'x', prompt: 'Say hi', max_tokens: 3 });
    assert.deepEqual(Object.keys(data), ['choices', 'created', 'id', 'model', 'object', 'prompt_filter_results', 'usage']);
    assert.match(data.id, /^cmpl-/);
    assert.equal(data.object, 'text_completion');
    assert.deepEqual(data.choices, [
      { content_filter_results: CHOICE_FILTER, finish_reason: 'length', index: 0, logprobs: null, text: ' the quick brown' },
    ]);
    assert.deepEqual(data.usage, { completion_tokens: 3, prompt_tokens: 2, total_tokens: 5 });

    const two = await openai().completions.create({ model: 'chat', prompt: ['a', 'b'], n: 2, max_tokens: 1 });
    assert.equal(two.choices.length, 4);
    assert.deepEqual(two.usage, { completion_tokens: 4, prompt_tokens: 2, total_tokens: 6 });
  });

  test('completions stream: text chunks, finish, usage, [DONE]', async () => {
    const res = await post('/openai/v1/completions', {
      model: 'chat',
      prompt: 'Hi',
      stream: true,
      max_tokens: 2,
      stream_options: { include_usage: true },
    });
    const events = sseEvents(await res.text());
    assert.equal(events.length, 6, 'annotations, 2 tokens, finish, usage, [DONE]');
    const chunks = events
      .slice(0, 5)
      .map((event) => JSON.parse(event) as { choices: { text?: string; finish_reason: string | null }[]; object: string });
    assert.deepEqual(chunks[0]?.choices, []);
    assert.deepEqual(
      chunks.slice(1, 4).map((chunk) => [chunk.object, chunk.choices[0]?.text, chunk.choices[0]?.finish_reason]),
      [
        ['text_completion', ' the', null],
        ['text_completion', ' quick', null],
        ['text_completion', '', 'length'],
      ],
    );
    assert.deepEqual((chunks[4] as unknown as { usage: unknown }).usage, { completion_tokens: 2, prompt_tokens: 1, total_tokens: 3 });
  });

  test('embeddings: list of unit vectors, base64 as the SDK asks, dimensions honoured', async () => {
    const data = await azure('embed').embeddings.create({ model: 'x', input: ['hello world', 'second input'] });
    assert.equal(data.object, 'list');
    assert.equal(data.model, 'text-embedding-3-small');
    assert.deepEqual(data.usage, { prompt_tokens: 4, total_tokens: 4 });
    assert.equal(data.data.length, 2);
    for (const [index, item] of data.data.entries()) {
      assert.equal(item.index, index);
      assert.equal(item.object, 'embedding');
      assert.equal(item.embedding.length, 8);
      const norm = Math.sqrt(item.embedding.reduce((sum, value) => sum + value * value, 0));
      assert.ok(Math.abs(norm - 1) < 1e-5);
    }
    assert.notDeepEqual(data.data[0]?.embedding, data.data[1]?.embedding);

    const raw = await post('/openai/v1/embeddings', { model: 'embed', input: 'one', dimensions: 3, encoding_format: 'float' });
    const body = (await raw.json()) as { data: { embedding: number[] }[]; usage: unknown };
    assert.equal(body.data[0]?.embedding.length, 3);
    assert.ok(body.data[0]?.embedding.every((value) => typeof value === 'number'));
    assert.deepEqual(body.usage, { prompt_tokens: 1, total_tokens: 1 });
  });
});

describe('errors', () => {
  const UNAUTHORIZED_BODY = {
    error: {
      code: '401',
      message:
        'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.',
    },
  };
  const NOT_FOUND_BODY = { error: { code: '404', message: 'Resource not found' } };
  const DEPLOYMENT_NOT_FOUND_BODY = {
    error: {
      code: 'DeploymentNotFound',
      message:
        'The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.',
    },
  };
  const hello = { messages: [{ role: 'user' as const, content: 'Hello' }] };

  test('401 for a wrong, missing or Bearer-wrong key; both header styles accepted', async () => {
    const rejected: Record<string, string>[] = [{ 'api-key': 'nope' }, {}, { authorization: 'Bearer nope' }, { authorization: KEY }];
    for (const headers of rejected) {
      const res = await post(chatPath(), hello, headers);
      assert.equal(res.status, 401, JSON.stringify(headers));
      assert.deepEqual(await res.json(), UNAUTHORIZED_BODY);
      assert.match(res.headers.get('apim-request-id') ?? '', /^[0-9a-f-]{36}$/);
    }
    assert.equal((await post(chatPath(), hello, { authorization: 'Bearer second-key' })).status, 200);
    assert.equal((await post(chatPath(), hello, { 'api-key': 'second-key' })).status, 200);
    await assert.rejects(openai('wrong').chat.completions.create({ model: 'chat', ...hello }), AuthenticationError);
  });

  test('404 Resource not found: missing or malformed api-version, unknown path, wrong method', async () => {
    for (const path of [
      chatPath('chat', null),
      chatPath('chat', '2024-10'),
      chatPath('chat', 'preview'),
      '/openai/deployments/chat/chat/completion?api-version=2024-10-21',
      '/openai/deployments/chat/images/edits?api-version=2024-10-21',
      '/openai/v1/chat/completions?api-version=2024-13',
      '/v1/chat/completions',
    ]) {
      const res = await post(path, hello);
      assert.equal(res.status, 404, path);
      assert.deepEqual(await res.json(), NOT_FOUND_BODY, path);
    }
    const get = await fetch(sim.url + chatPath(), { headers: { 'api-key': KEY } });
    assert.equal(get.status, 404);
    assert.deepEqual(await get.json(), NOT_FOUND_BODY);
    // Preview api-versions are accepted on both route kinds.
    assert.equal((await post(chatPath('chat', '2025-04-01-preview'), hello)).status, 200);
    assert.equal((await post('/openai/v1/chat/completions?api-version=preview', { model: 'chat', ...hello })).status, 200);
    assert.equal((await post('/openai/v1/chat/completions?api-version=latest', { model: 'chat', ...hello })).status, 200);
  });

  test('404 DeploymentNotFound on both route kinds', async () => {
    const classic = await post(chatPath('nope'), hello);
    assert.equal(classic.status, 404);
    assert.deepEqual(await classic.json(), DEPLOYMENT_NOT_FOUND_BODY);
    await assert.rejects(
      openai().chat.completions.create({ model: 'nope', ...hello }),
      (error: unknown) => error instanceof NotFoundError && (error.error as { code?: string }).code === 'DeploymentNotFound',
    );
  });

  test('400 invalid_request_error bodies', async () => {
    const cases: [string, unknown, Record<string, unknown>][] = [
      [
        chatPath(),
        '{"messages": [',
        {
          message:
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
          type: 'invalid_request_error',
          param: null,
          code: null,
        },
      ],
      [
        chatPath(),
        {},
        {
          message: "Missing required parameter: 'messages'.",
          type: 'invalid_request_error',
          param: 'messages',
          code: 'missing_required_parameter',
        },
      ],
      [
        chatPath(),
        { messages: [] },
        { message: "[] is too short - 'messages'", type: 'invalid_request_error', param: 'messages', code: null },
      ],
      [
        chatPath(),
        { ...hello, stream_options: { include_usage: true } },
        {
          message: "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
          type: 'invalid_request_error',
          param: 'stream_options',
          code: null,
        },
      ],
      [
        chatPath(),
        { ...hello, max_tokens: 0 },
        {
          message: "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead.",
          type: 'invalid_request_error',
          param: 'max_tokens',
          code: 'integer_below_min_value',
        },
      ],
      [
        '/openai/deployments/chat/completions?api-version=2024-10-21',
        {},
        {
          message: "Missing required parameter: 'prompt'.",
          type: 'invalid_request_error',
          param: 'prompt',
          code: 'missing_required_parameter',
        },
      ],
      [
        '/openai/deployments/embed/embeddings?api-version=2024-10-21',
        {},
        {
          message: "Missing required parameter: 'input'.",
          type: 'invalid_request_error',
          param: 'input',
          code: 'missing_required_parameter',
        },
      ],
      [
        '/openai/v1/chat/completions',
        hello,
        {
          message: "Missing required parameter: 'model'.",
          type: 'invalid_request_error',
          param: 'model',
          code: 'missing_required_parameter',
        },
      ],
    ];
    for (const [path, body, error] of cases) {
      const res = await post(path, body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.deepEqual(await res.json(), { error }, JSON.stringify(body));
    }
    await assert.rejects(
      azure().chat.completions.create({ model: 'x', messages: [] }),
      (error: unknown) => error instanceof BadRequestError && error.param === 'messages',
    );
  });
  test('400 "Unrecognized request argument" for stream_options on api-versions before 2024-09-01-preview', async () => {
    const streaming = { ...hello, stream: true, max_tokens: 2, stream_options: { include_usage: true } };
    const unrecognized = {
      error: { message: 'Unrecognized request argument supplied: stream_options', type: 'invalid_request_error', param: null, code: null },
    };
    for (const version of ['2024-06-01', '2024-02-01', '2023-05-15', '2024-08-01-preview', '2024-05-01-preview']) {
      const res = await post(chatPath('chat', version), streaming);
      assert.equal(res.status, 400, version);
      assert.deepEqual(await res.json(), unrecognized, version);
      assert.equal(res.headers.get('x-ms-region'), 'Sweden Central', 'an answer of a known deployment');
      // The same stream without the field is served: the field is what the old version refuses.
      const { stream_options: _dropped, ...plain } = streaming;
      assert.equal((await post(chatPath('chat', version), plain)).status, 200, `${version} without stream_options`);
    }
    // Even a field with no effect is unknown to an old version.
    assert.equal((await post(chatPath('chat', '2024-06-01'), { ...hello, stream: true, stream_options: null })).status, 400);
    await assert.rejects(
      new AzureOpenAI({
        endpoint: sim.url,
        apiKey: KEY,
        apiVersion: '2024-06-01',
        deployment: 'chat',
        maxRetries: 0,
      }).chat.completions.create({
        model: 'x',
        ...hello,
        stream: true,
        stream_options: { include_usage: true },
      }),
      (error: unknown) =>
        error instanceof BadRequestError && error.message.includes('Unrecognized request argument supplied: stream_options'),
    );
    // From 2024-09-01-preview on, and on v1 routes without a dated version, it is known.
    for (const path of [
      chatPath('chat', '2024-09-01-preview'),
      chatPath('chat', '2024-10-21'),
      chatPath('chat', '2025-04-01-preview'),
      '/openai/v1/chat/completions',
      '/openai/v1/chat/completions?api-version=preview',
      '/openai/v1/chat/completions?api-version=latest',
    ]) {
      const res = await post(path, { model: 'chat', ...streaming });
      assert.equal(res.status, 200, path);
      assert.match(await res.text(), /"choices":\[\],.*"usage":\{"completion_tokens":2/, `${path}: the usage chunk`);
    }
  });
});

describe('headers', () => {
  test('every answer carries request ids; known deployments add region, session and limits', async () => {
    const ok = await post(
      chatPath(),
      { messages: [{ role: 'user', content: 'Hello' }] },
      { 'api-key': KEY, 'x-request-id': 'client-chosen' },
    );
    const apim = ok.headers.get('apim-request-id') ?? '';
    assert.match(apim, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(ok.headers.get('x-ms-client-request-id'), apim);
    assert.match(ok.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/, 'Azure generates its own x-request-id');
    assert.equal(ok.headers.get('x-ms-region'), 'Sweden Central');
    assert.match(ok.headers.get('azureml-model-session') ?? '', /^gpt-4o-2024-08-06-[0-9a-f]{8}$/);
    assert.equal(ok.headers.get('x-ratelimit-limit-tokens'), '100000');
    assert.equal(ok.headers.get('x-ratelimit-limit-requests'), '100', 'per 10 s: 100k TPM -> 600 RPM -> 100');
    assert.ok(Number(ok.headers.get('x-ratelimit-remaining-tokens')) < 100_000);
    assert.ok(Number(ok.headers.get('x-ratelimit-remaining-requests')) < 100);
    const recorded = sim.recentRequests('chat').at(-1);
    assert.equal(recorded?.clientRequestId, 'client-chosen');
    assert.equal(recorded?.requestId, apim);
    assert.equal(recorded?.apiVersion, API_VERSION);
    assert.equal(recorded?.auth, 'api-key');
    assert.equal(recorded?.status, 200);

    const badRequest = await post(chatPath(), { messages: [] });
    assert.equal(badRequest.status, 400);
    assert.ok(badRequest.headers.get('x-ratelimit-remaining-tokens') !== null, 'errors of a known deployment carry the limits too');
    assert.equal(badRequest.headers.get('x-ms-region'), 'Sweden Central');

    const unlimited = await post(chatPath('old-chat'), { messages: [{ role: 'user', content: 'Hello' }] });
    assert.equal(unlimited.headers.get('x-ms-region'), 'East US');
    for (const name of [
      'x-ratelimit-limit-tokens',
      'x-ratelimit-limit-requests',
      'x-ratelimit-remaining-tokens',
      'x-ratelimit-remaining-requests',
    ]) {
      assert.equal(unlimited.headers.get(name), null, `unlimited deployments omit ${name}`);
    }
  });
});

describe('operations the deployment’s model does not do', () => {
  /** Azure's body, word for word as captured (OpenHands/OpenHands GH#1003, microsoft/AI-Red-Teaming-Playground-Labs GH#18). */
  const notSupported = (operation: string, model: string) => ({
    error: {
      code: 'OperationNotSupported',
      message: `The ${operation} operation does not work with the specified model, ${model}. Please choose different model and try again. You can learn more about which models can be used with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993.`,
    },
  });

  test('embeddings on a chat deployment: 400 OperationNotSupported naming the model without its version, on both route kinds', async () => {
    const before = sim.stats('chat');
    for (const response of [
      await post(`/openai/deployments/chat/embeddings?api-version=${API_VERSION}`, { input: 'hello' }),
      await post('/openai/v1/embeddings', { model: 'chat', input: ['a', 'b'] }),
      // Azure decides from the model, before it looks at the body.
      await post(`/openai/deployments/chat/embeddings?api-version=${API_VERSION}`, {}),
    ]) {
      assert.equal(response.status, 400);
      assert.deepEqual(await response.json(), notSupported('embeddings', 'gpt-4o'));
      assert.equal(response.headers.get('x-ms-deployment-name'), 'chat');
      assert.ok(response.headers.get('apim-request-id'));
    }
    const after = sim.stats('chat');
    assert.equal(after.failed - before.failed, 3, 'a refusal counts as failed');
    assert.equal(after.promptTokens, before.promptTokens, 'and costs no tokens');

    await assert.rejects(azure('chat').embeddings.create({ model: 'x', input: 'hello' }), (error: unknown) => {
      assert.ok(error instanceof BadRequestError);
      assert.equal(error.code, 'OperationNotSupported');
      return true;
    });
  });

  test('chat, completions and responses on an embeddings deployment: 400 OperationNotSupported', async () => {
    const cases: [string, unknown, string][] = [
      [chatPath('embed'), { messages: [{ role: 'user', content: 'hi' }] }, 'chatCompletion'],
      ['/openai/v1/chat/completions', { model: 'embed', messages: [{ role: 'user', content: 'hi' }] }, 'chatCompletion'],
      [`/openai/deployments/embed/completions?api-version=${API_VERSION}`, { prompt: 'hi' }, 'completion'],
      ['/openai/v1/responses', { model: 'embed', input: 'hi' }, 'responses'],
    ];
    for (const [path, body, operation] of cases) {
      const response = await post(path, body);
      assert.equal(response.status, 400, path);
      assert.deepEqual(await response.json(), notSupported(operation, 'text-embedding-3-small'), path);
    }
    await assert.rejects(
      azure('embed').chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'hi' }] }),
      (error: unknown) => error instanceof BadRequestError && error.code === 'OperationNotSupported',
    );
  });

  test('each model keeps its own operations', async () => {
    assert.equal((await post(chatPath('old-chat'), { messages: [{ role: 'user', content: 'hi' }] })).status, 200);
    assert.equal((await post(`/openai/deployments/chat/completions?api-version=${API_VERSION}`, { prompt: 'hi' })).status, 200);
    assert.equal((await post('/openai/v1/embeddings', { model: 'embed', input: 'hi' })).status, 200);
  });
});
