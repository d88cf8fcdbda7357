/**
 * The simulator's Responses and Conversations APIs: two instances are two Azure resources, so what
 * one stored (responses, items, conversations, encrypted reasoning) the other does not know, and a
 * follow-up sent there fails as on Azure. Through the openai SDK (OpenAI on /openai/v1, AzureOpenAI
 * on /openai/responses?api-version=) and raw fetch for the exact bytes.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { AzureOpenAI, BadRequestError, NotFoundError, OpenAI, RateLimitError } from 'openai';
import { startSimulator, type Simulator } from '../../shared/simulator/index.ts';
import { ResourceState } from '../../shared/simulator/responses-api/state.ts';
import { sharedByTheFile } from '../helpers/file-hooks.ts';

const KEY = 'test-key';
const FIVE_WORDS = ' the quick brown fox jumps';
const RESPONSE_KEYS = [
  'id',
  'object',
  'created_at',
  'status',
  'background',
  'completed_at',
  'content_filters',
  'error',
  'frequency_penalty',
  'incomplete_details',
  'instructions',
  'max_output_tokens',
  'max_tool_calls',
  'model',
  'output',
  'parallel_tool_calls',
  'presence_penalty',
  'previous_response_id',
  'prompt_cache_key',
  'prompt_cache_retention',
  'reasoning',
  'safety_identifier',
  'service_tier',
  'store',
  'temperature',
  'text',
  'tool_choice',
  'tools',
  'top_logprobs',
  'top_p',
  'truncation',
  'usage',
  'user',
  'metadata',
];
const RESP_ID = /^resp_[0-9a-f]{48}$/;
const MSG_ID = /^msg_[0-9a-f]{48}$/;

/** Resource A: the one that makes the responses. */
let simA: Simulator;
/** Resource B: same deployment names, another resource. */
let simB: Simulator;

sharedByTheFile(
  async () => {
    // Each kept as it comes: one that fails must not leave the other running unseen by the stop.
    await Promise.all([
      startSimulator({
        apiKeys: [KEY],
        deployments: [
          { name: 'gpt', completionTokens: 5, tpm: 1_000_000 },
          { name: 'mini', model: 'gpt-4o-mini-2024-07-18', completionTokens: 3 },
          { name: 'long', completionTokens: 20 },
          { name: 'slow', completionTokens: 5, latency: { ttftMs: 150, perTokenMs: 30 } },
          // 1000 TPM -> 6 RPM -> one request per 10-second window.
          { name: 'tiny', completionTokens: 5, tpm: 1000 },
          { name: 'faulty', completionTokens: 5 },
        ],
      }).then((started) => (simA = started)),
      startSimulator({ apiKeys: [KEY], deployments: [{ name: 'gpt', completionTokens: 5 }] }).then((started) => (simB = started)),
    ]);
  },
  () => Promise.all([simA?.close(), simB?.close()]),
);

function openai(sim: Simulator): OpenAI {
  return new OpenAI({ baseURL: `${sim.url}/openai/v1`, apiKey: KEY, maxRetries: 0 });
}
function azure(sim: Simulator): AzureOpenAI {
  return new AzureOpenAI({ endpoint: sim.url, apiKey: KEY, apiVersion: '2025-04-01-preview', maxRetries: 0 });
}
async function call(
  sim: Simulator,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: unknown; response: Response }> {
  const response = await fetch(sim.url + path, {
    method,
    headers: { 'content-type': 'application/json', 'api-key': KEY },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, json: text === '' ? null : JSON.parse(text), response };
}
type Json = Record<string, unknown>;
const create = async (sim: Simulator, body: Json) => (await call(sim, 'POST', '/openai/v1/responses', body)).json as Json;

/** The events of a Responses SSE body: `event: <type>` and `data: {json}` with the same type, blank-line separated. */
function sseEvents(text: string): Json[] {
  assert.ok(text.endsWith('\n\n'));
  assert.ok(!text.includes('[DONE]'), 'the Responses API sends no [DONE]');
  return text
    .slice(0, -2)
    .split('\n\n')
    .map((block) => {
      const [eventLine, dataLine, ...rest] = block.split('\n');
      assert.equal(rest.length, 0, block);
      assert.match(eventLine ?? '', /^event: /);
      assert.match(dataLine ?? '', /^data: /);
      const data = JSON.parse((dataLine ?? '').slice('data: '.length)) as Json;
      assert.equal(data.type, (eventLine ?? '').slice('event: '.length));
      return data;
    });
}

describe('responses.create', () => {
  test('the OpenAI client gets a response object with Azure keys, ids, model version and exact usage', async () => {
    const raw = await call(simA, 'POST', '/openai/v1/responses', { model: 'gpt', input: 'Hello' });
    assert.equal(raw.status, 200);
    assert.equal(raw.response.headers.get('x-ms-deployment-name'), 'gpt');
    assert.ok(raw.response.headers.get('x-ratelimit-remaining-tokens') !== null, 'limit headers as on chat');
    const body = raw.json as Json;
    assert.deepEqual(Object.keys(body), RESPONSE_KEYS, 'usage near the end, metadata last, as Azure sends it');
    assert.match(body.id as string, RESP_ID);
    assert.equal(body.object, 'response');
    assert.equal(body.status, 'completed');
    assert.equal(body.model, 'gpt-4o-2024-08-06', 'the model version, not the deployment name');
    assert.ok(Math.abs((body.created_at as number) - Date.now() / 1000) < 5);
    const output = body.output as Json[];
    assert.equal(output.length, 1);
    assert.match(output[0]?.id as string, MSG_ID);
    assert.deepEqual(output[0], {
      id: output[0]?.id,
      type: 'message',
      status: 'completed',
      content: [{ type: 'output_text', annotations: [], logprobs: [], text: FIVE_WORDS }],
      role: 'assistant',
    });
    // "Hello" as one user message counts like chat: 3 + 1 (role) + 1 (text) + 3 priming.
    assert.deepEqual(body.usage, {
      input_tokens: 8,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: 5,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: 13,
    });
    assert.deepEqual(body.text, { format: { type: 'text' }, verbosity: 'medium' });
    assert.equal(body.store, true);
    assert.equal(body.background, false);
    assert.equal(body.error, null);
    assert.equal(body.previous_response_id, null);
    assert.ok(!('conversation' in body), 'no conversation key without a conversation, as in Azure captures');

    const sdk = await openai(simA).responses.create({ model: 'gpt', input: 'Hello', instructions: 'Be brief.', metadata: { a: 'b' } });
    assert.equal(sdk.output_text, FIVE_WORDS);
    assert.equal(sdk.instructions, 'Be brief.');
    assert.deepEqual(sdk.metadata, { a: 'b' });
    const chat = await openai(simA).chat.completions.create({
      model: 'gpt',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hello' },
      ],
    });
    assert.equal(sdk.usage?.input_tokens, chat.usage?.prompt_tokens, 'instructions count like a system message');

    const recorded = simA.recentRequests('gpt').filter((request) => request.path === '/openai/v1/responses');
    assert.deepEqual(
      recorded.map((request) => [request.method, request.model, request.references, request.status, request.auth]),
      [
        ['POST', 'gpt', [], 200, 'api-key'],
        ['POST', 'gpt', [], 200, 'bearer'],
      ],
    );
  });

  test('the AzureOpenAI client uses /openai/responses with a dated api-version; older or missing versions are 404s', async () => {
    const client = azure(simA);
    const created = await client.responses.create({ model: 'mini', input: 'Hi' });
    assert.equal(created.model, 'gpt-4o-mini-2024-07-18');
    assert.equal(created.output_text, ' the quick brown');
    const last = simA.recentRequests('mini').at(-1);
    assert.equal(last?.path, '/openai/responses');
    assert.equal(last?.apiVersion, '2025-04-01-preview');
    const fetched = await client.responses.retrieve(created.id);
    assert.equal(fetched.id, created.id);
    const items = await client.responses.inputItems.list(created.id);
    assert.equal(items.data.length, 1);
    await client.responses.delete(created.id);
    await assert.rejects(client.responses.retrieve(created.id), NotFoundError);

    const old = await call(simA, 'POST', '/openai/responses?api-version=2024-10-21', { model: 'mini', input: 'Hi' });
    assert.equal(old.status, 404);
    assert.deepEqual(old.json, {
      error: { message: 'Invalid URL (POST /v1/responses)', type: 'invalid_request_error', param: null, code: null },
    });
    for (const path of [
      '/openai/responses',
      '/openai/responses?api-version=preview',
      '/openai/deployments/mini/responses?api-version=2025-04-01-preview',
    ]) {
      const missing = await call(simA, 'POST', path, { model: 'mini', input: 'Hi' });
      assert.equal(missing.status, 404, path);
      assert.deepEqual(missing.json, { error: { code: '404', message: 'Resource not found' } }, path);
    }
    const v1 = await call(simA, 'POST', '/openai/v1/responses?api-version=preview', { model: 'mini', input: 'Hi' });
    assert.equal(v1.status, 200, 'v1 accepts (and ignores) an api-version');
  });

  test('an unknown deployment, a bad key and bad bodies answer as Azure does', async () => {
    const unknown = await call(simA, 'POST', '/openai/v1/responses', { model: 'nope', input: 'Hi' });
    assert.equal(unknown.status, 404);
    assert.equal((unknown.json as { error: Json }).error.code, 'DeploymentNotFound');
    const unauthorized = await fetch(`${simA.url}/openai/v1/responses/resp_x`, { headers: { 'api-key': 'wrong' } });
    assert.equal(unauthorized.status, 401);
    const cases: [Json, Json][] = [
      [
        { model: 'gpt', messages: [{ role: 'user', content: 'Hi' }], input: 'Hi' },
        {
          message:
            "Unsupported parameter: 'messages'. In the Responses API, this parameter has moved to 'input'. Try again with the new parameter. See the API documentation for more information: https://platform.openai.com/docs/api-reference/responses/create.",
          type: 'invalid_request_error',
          param: null,
          code: 'unsupported_parameter',
        },
      ],
      [
        { model: 'gpt' },
        {
          message: "Missing required parameter: 'input'.",
          type: 'invalid_request_error',
          param: 'input',
          code: 'missing_required_parameter',
        },
      ],
      [
        { model: 'gpt', input: 'Hi', max_output_tokens: 15 },
        {
          message: "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got 15 instead.",
          type: 'invalid_request_error',
          param: 'max_output_tokens',
          code: 'integer_below_min_value',
        },
      ],
      [
        { model: 'gpt', input: [{ type: 'function_call', id: '__fake_id__', call_id: 'c', name: 'f', arguments: '{}' }] },
        {
          message: "Invalid 'input[0].id': '__fake_id__'. Expected an ID that begins with 'fc'.",
          type: 'invalid_request_error',
          param: 'input[0].id',
          code: 'invalid_value',
        },
      ],
      [
        { model: 'gpt', input: 'Hi', previous_response_id: 'resp_x', conversation: 'conv_x' },
        {
          message: "Mutually exclusive parameters: ''. Ensure you are only providing one of: 'pre..._id' or 'conversation'.",
          type: 'invalid_request_error',
          param: null,
          code: 'mutually_exclusive_parameters',
        },
      ],
      [
        { model: 'gpt', input: [] },
        {
          message: `One of "input" or "previous_response_id" or 'prompt' or 'conversation' must be provided.`,
          type: 'invalid_request_error',
          param: null,
          code: 'missing_required_parameter',
        },
      ],
    ];
    for (const [body, error] of cases) {
      const answer = await call(simA, 'POST', '/openai/v1/responses', body);
      assert.equal(answer.status, 400, JSON.stringify(body));
      assert.deepEqual(answer.json, { error }, JSON.stringify(body));
    }
  });

  test('max_output_tokens caps the output: status incomplete, and reasoning spends the budget first', async () => {
    const capped = await create(simA, { model: 'long', input: 'Hi', max_output_tokens: 16 });
    assert.equal(capped.status, 'incomplete');
    assert.deepEqual(capped.incomplete_details, { reason: 'max_output_tokens' });
    assert.equal((capped.usage as Json).output_tokens, 16);
    const message = (capped.output as Json[])[0] as Json;
    assert.equal(message.status, 'incomplete');
    assert.equal(
      ((message.content as Json[])[0] as Json).text,
      ' the quick brown fox jumps over the lazy dog and then it runs back to the',
    );

    const reasoning = await create(simA, { model: 'long', input: 'Hi', max_output_tokens: 16, reasoning: { effort: 'low' } });
    assert.equal(reasoning.status, 'incomplete');
    assert.deepEqual(
      (reasoning.output as Json[]).map((item) => item.type),
      ['reasoning'],
      'no room left for a message',
    );
    assert.deepEqual((reasoning.usage as Json).output_tokens_details, { reasoning_tokens: 16 });
  });

  test('reasoning: a reasoning item first, reasoning tokens billed, encrypted_content when included', async () => {
    const body = await create(simA, {
      model: 'gpt',
      input: 'Think',
      reasoning: { effort: 'medium' },
      include: ['reasoning.encrypted_content'],
    });
    const [reasoning, message] = body.output as Json[];
    assert.match(reasoning?.id as string, /^rs_[0-9a-f]{48}$/);
    assert.deepEqual(Object.keys(reasoning ?? {}), ['id', 'type', 'encrypted_content', 'summary']);
    assert.match(reasoning?.encrypted_content as string, /^gAAAAA[A-Za-z0-9_-]+$/, 'a Fernet token like OpenAI’s');
    assert.equal(message?.type, 'message');
    assert.deepEqual(body.reasoning, { effort: 'medium', summary: null });
    const usage = body.usage as { output_tokens: number; output_tokens_details: { reasoning_tokens: number } };
    assert.equal(usage.output_tokens_details.reasoning_tokens, 64);
    assert.equal(usage.output_tokens, 69);
    const plain = await create(simA, { model: 'gpt', input: 'Think', reasoning: { effort: 'low' } });
    assert.deepEqual(Object.keys((plain.output as Json[])[0] ?? {}), ['id', 'type', 'summary'], 'no encrypted_content unless included');
  });
});

describe('streaming', () => {
  test('SSE with event: lines, sequence numbers, one delta per token, response.completed last and no [DONE]', async () => {
    const answer = await fetch(`${simA.url}/openai/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': KEY },
      body: JSON.stringify({ model: 'gpt', input: 'Hello', stream: true }),
    });
    assert.equal(answer.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    const events = sseEvents(await answer.text());
    assert.deepEqual(
      events.map((event) => event.type),
      [
        'response.created',
        'response.in_progress',
        'response.output_item.added',
        'response.content_part.added',
        ...Array<string>(5).fill('response.output_text.delta'),
        'response.output_text.done',
        'response.content_part.done',
        'response.output_item.done',
        'response.completed',
      ],
    );
    assert.deepEqual(
      events.map((event) => event.sequence_number),
      events.map((_, index) => index),
    );
    const created = (events[0] as Json).response as Json;
    assert.deepEqual(Object.keys(created), RESPONSE_KEYS);
    assert.equal(created.status, 'in_progress');
    assert.equal(created.usage, null);
    assert.deepEqual(created.output, []);
    const added = events[2] as Json;
    const messageId = (added.item as Json).id as string;
    assert.deepEqual(added, {
      type: 'response.output_item.added',
      sequence_number: 2,
      output_index: 0,
      item: { id: messageId, type: 'message', status: 'in_progress', content: [], role: 'assistant' },
    });
    assert.deepEqual(events[3], {
      type: 'response.content_part.added',
      sequence_number: 3,
      item_id: messageId,
      output_index: 0,
      content_index: 0,
      part: { type: 'output_text', annotations: [], logprobs: [], text: '' },
    });
    const deltas = events.filter((event) => event.type === 'response.output_text.delta');
    assert.equal(deltas.map((event) => event.delta).join(''), FIVE_WORDS);
    for (const delta of deltas) {
      assert.equal(delta.item_id, messageId);
      assert.deepEqual(delta.logprobs, []);
      assert.equal(typeof delta.obfuscation, 'string');
    }
    assert.equal((events.at(-4) as Json).text, FIVE_WORDS);
    const completed = (events.at(-1) as Json).response as Json;
    assert.equal(completed.status, 'completed');
    assert.equal((completed.usage as Json).total_tokens, 13);
    assert.equal(completed.id, created.id);
    const stored = await call(simA, 'GET', `/openai/v1/responses/${created.id as string}`);
    assert.deepEqual(stored.json, completed, 'GET returns what response.completed carried');
    assert.equal(simA.recentRequests('gpt').at(-2)?.stream, true);
  });

  test('the SDK parses the stream: `stream: true` iteration and responses.stream().finalResponse()', async () => {
    const client = openai(simA);
    const stream = await client.responses.create({ model: 'gpt', input: 'Hello', stream: true, reasoning: { effort: 'minimal' } });
    const types: string[] = [];
    let text = '';
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === 'response.output_text.delta') text += event.delta;
    }
    assert.equal(text, FIVE_WORDS);
    assert.deepEqual(types.slice(0, 4), [
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.output_item.done',
    ]);
    assert.equal(types.at(-1), 'response.completed');

    const final = await client.responses.stream({ model: 'gpt', input: 'Hello' }).finalResponse();
    assert.equal(final.output_text, FIVE_WORDS);
    assert.equal(final.usage?.output_tokens, 5);
    const azureFinal = await azure(simA).responses.stream({ model: 'gpt', input: 'Hello', max_output_tokens: 16 }).finalResponse();
    assert.equal(azureFinal.status, 'completed');
    assert.equal(azureFinal.output_text, FIVE_WORDS);
    const incomplete = await client.responses.stream({ model: 'long', input: 'Hello', max_output_tokens: 16 }).finalResponse();
    assert.equal(incomplete.status, 'incomplete', 'the stream ends with response.incomplete');
    assert.equal(incomplete.usage?.output_tokens, 16);

    const background = await client.responses.create({ model: 'gpt', input: 'Hello', background: true, stream: true });
    const backgroundTypes: string[] = [];
    for await (const event of background) backgroundTypes.push(event.type);
    assert.deepEqual(backgroundTypes.slice(0, 3), ['response.created', 'response.queued', 'response.in_progress']);
    assert.equal(backgroundTypes.at(-1), 'response.completed');
  });

  test('paced by the latency model: first token at ttft, the end after every token', async () => {
    const started = performance.now();
    const answer = await fetch(`${simA.url}/openai/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': KEY },
      body: JSON.stringify({ model: 'slow', input: 'Hello', stream: true }),
    });
    const headersAt = performance.now() - started;
    await answer.text();
    const endedAt = performance.now() - started;
    assert.ok(headersAt >= 140, `headers at ${headersAt} ms, ttft 150`);
    assert.ok(endedAt >= 140 + 5 * 30, `ended at ${endedAt} ms, ttft + 5 × 30`);
  });
});

describe('stored responses', () => {
  test('retrieve, input_items (order, limit, after) and delete through the SDK', async () => {
    const client = openai(simA);
    const created = await client.responses.create({
      model: 'gpt',
      input: [
        { role: 'user', content: 'one' },
        { role: 'assistant', content: 'two' },
        { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'three' }] },
      ],
    });
    const fetched = await client.responses.retrieve(created.id);
    assert.deepEqual(fetched, created);

    const list = await client.responses.inputItems.list(created.id);
    assert.equal(list.data.length, 3);
    const newestFirst = list.data.map((item) => (item.type === 'message' ? (item.content[0] as { text: string }).text : ''));
    assert.deepEqual(newestFirst, ['three', 'two', 'one'], 'desc by default');
    for (const item of list.data) assert.match(item.id, MSG_ID);
    assert.deepEqual(list.data[2], {
      id: list.data[2]?.id,
      type: 'message',
      status: 'completed',
      content: [{ type: 'input_text', text: 'one' }],
      role: 'user',
    });
    assert.deepEqual(list.data[1], {
      id: list.data[1]?.id,
      type: 'message',
      status: 'completed',
      content: [{ type: 'output_text', annotations: [], logprobs: [], text: 'two' }],
      role: 'assistant',
    });

    const page = await call(simA, 'GET', `/openai/v1/responses/${created.id}/input_items?order=asc&limit=2`);
    const pageBody = page.json as { data: { id: string }[]; first_id: string; last_id: string; has_more: boolean; object: string };
    assert.equal(pageBody.object, 'list');
    assert.equal(pageBody.has_more, true);
    assert.deepEqual([pageBody.first_id, pageBody.last_id], [list.data[2]?.id, list.data[1]?.id]);
    const next = (await call(simA, 'GET', `/openai/v1/responses/${created.id}/input_items?order=asc&after=${pageBody.last_id}`))
      .json as typeof pageBody;
    assert.deepEqual(
      next.data.map((item) => item.id),
      [list.data[0]?.id],
    );
    assert.equal(next.has_more, false);

    const deleted = await call(simA, 'DELETE', `/openai/v1/responses/${created.id}`);
    assert.deepEqual(deleted.json, { id: created.id, object: 'response', deleted: true });
    const gone = await call(simA, 'GET', `/openai/v1/responses/${created.id}`);
    assert.equal(gone.status, 404);
    assert.deepEqual(gone.json, {
      error: { message: `Response with id '${created.id}' not found.`, type: 'invalid_request_error', param: null, code: null },
    });
    await assert.rejects(client.responses.delete(created.id), NotFoundError);
    await assert.rejects(client.responses.inputItems.list(created.id), NotFoundError);
  });

  test('store: false keeps nothing, yet its items carry ids', async () => {
    const body = await create(simA, { model: 'gpt', input: 'Hi', store: false, reasoning: { effort: 'low' } });
    assert.equal(body.store, false);
    const [reasoning, message] = body.output as Json[];
    assert.match(reasoning?.id as string, /^rs_/);
    assert.match(message?.id as string, MSG_ID);
    assert.equal((await call(simA, 'GET', `/openai/v1/responses/${body.id as string}`)).status, 404);
    const followUp = await call(simA, 'POST', '/openai/v1/responses', { model: 'gpt', input: 'More', previous_response_id: body.id });
    assert.equal((followUp.json as { error: Json }).error.code, 'previous_response_not_found');
    const echoed = await call(simA, 'POST', '/openai/v1/responses', {
      model: 'gpt',
      store: false,
      input: [reasoning, { role: 'user', content: 'More' }],
    });
    assert.equal(echoed.status, 400);
    assert.deepEqual(echoed.json, {
      error: {
        message: `Item with id '${reasoning?.id as string}' not found. Items are not persisted when \`store\` is set to false. Try again with \`store\` set to true, or remove this item from your input.`,
        type: 'invalid_request_error',
        param: 'input',
        code: null,
      },
    });
  });

  test('background: queued at once, completed after the latency model; cancel before the end; cancel of a synchronous response is a 400', async () => {
    const queued = await call(simA, 'POST', '/openai/v1/responses', { model: 'gpt', input: 'Hi', background: true });
    const body = queued.json as Json;
    assert.equal(body.status, 'queued');
    assert.equal(body.background, true);
    assert.deepEqual(body.output, []);
    assert.equal(body.usage, null);
    let polled = body;
    for (let attempt = 0; attempt < 50 && polled.status !== 'completed'; attempt++) {
      await sleep(5);
      polled = (await call(simA, 'GET', `/openai/v1/responses/${body.id as string}`)).json as Json;
    }
    assert.equal(polled.status, 'completed');
    assert.equal(((polled.usage as Json).output_tokens as number) + 0, 5);
    const cancelDone = await call(simA, 'POST', `/openai/v1/responses/${body.id as string}/cancel`);
    assert.equal((cancelDone.json as Json).status, 'completed', 'cancelling a finished response changes nothing');

    const statsBefore = simA.stats('slow');
    const slow = await openai(simA).responses.create({ model: 'slow', input: 'Hi', background: true });
    assert.equal(slow.status, 'queued');
    const cancelled = await openai(simA).responses.cancel(slow.id);
    assert.equal(cancelled.status, 'cancelled');
    await sleep(400); // past ttft + 5 tokens: a generation still running would have completed
    assert.equal((await openai(simA).responses.retrieve(slow.id)).status, 'cancelled');
    assert.equal(simA.stats('slow').completionTokens, statsBefore.completionTokens, 'a cancelled generation bills no output');

    const sync = await create(simA, { model: 'gpt', input: 'Hi' });
    const refused = await call(simA, 'POST', `/openai/v1/responses/${sync.id as string}/cancel`);
    assert.equal(refused.status, 400);
    assert.deepEqual(refused.json, {
      error: { message: 'Cannot cancel a synchronous response.', type: 'invalid_request_error', param: null, code: null },
    });
    const noStore = await call(simA, 'POST', '/openai/v1/responses', { model: 'gpt', input: 'Hi', background: true, store: false });
    assert.equal(noStore.status, 400);
  });

  test('usage of a follow-up bills the whole earlier context, like the same chat history', async () => {
    const client = openai(simA);
    const first = await client.responses.create({ model: 'gpt', input: 'Hello' });
    const second = await client.responses.create({
      model: 'gpt',
      input: 'Again',
      previous_response_id: first.id,
      instructions: 'Be brief.',
    });
    const third = await client.responses.create({ model: 'gpt', input: 'More', previous_response_id: second.id });
    assert.equal(second.previous_response_id, first.id);
    const chat = async (messages: { role: 'user' | 'assistant' | 'system'; content: string }[]) =>
      (await client.chat.completions.create({ model: 'gpt', messages })).usage?.prompt_tokens;
    assert.equal(
      second.usage?.input_tokens,
      await chat([
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hello' },
        { role: 'assistant', content: FIVE_WORDS },
        { role: 'user', content: 'Again' },
      ]),
    );
    // Instructions are not carried over to follow-ups.
    assert.equal(
      third.usage?.input_tokens,
      await chat([
        { role: 'user', content: 'Hello' },
        { role: 'assistant', content: FIVE_WORDS },
        { role: 'user', content: 'Again' },
        { role: 'assistant', content: FIVE_WORDS },
        { role: 'user', content: 'More' },
      ]),
    );
    assert.equal(third.usage?.input_tokens, 3 + 5 + 9 + 5 + 9 + 5);
    assert.equal(third.id.slice(5, 21), first.id.slice(5, 21), 'a chain shares its id lineage, as in Azure captures');
  });

  test('stats count input and output tokens; calls by id count against the creating deployment with model null', async () => {
    const before = simA.stats('mini');
    const created = await openai(simA).responses.create({ model: 'mini', input: 'Hello' });
    await openai(simA).responses.retrieve(created.id);
    const after = simA.stats('mini');
    assert.equal(after.received - before.received, 2);
    assert.equal(after.served - before.served, 2);
    assert.equal(after.promptTokens - before.promptTokens, 8);
    assert.equal(after.completionTokens - before.completionTokens, 3);
    const get = simA.recentRequests('mini').at(-1);
    assert.equal(get?.method, 'GET');
    assert.equal(get?.model, null);
    assert.deepEqual(get?.references, [created.id]);
    assert.equal(get?.path, `/openai/v1/responses/${created.id}`);
  });

  test('a resource keeps at most its bound of responses: the oldest is evicted with its items', () => {
    const state = new ResourceState(2);
    const records = [1, 2, 3].map((n) => {
      const item = { id: `msg_${n}`, item: { id: `msg_${n}` }, tokens: 1, holders: 0 };
      return { id: `resp_${n}`, inputItems: [item], result: { output: [] }, timers: [] } as unknown as Parameters<
        ResourceState['putResponse']
      >[0];
    });
    for (const record of records) state.putResponse(record);
    assert.equal(state.response('resp_1'), undefined);
    assert.equal(state.item('msg_1'), undefined, 'its items go with it');
    assert.ok(state.response('resp_3') !== undefined && state.item('msg_3') !== undefined);
  });
});

describe('state lives in one resource', () => {
  test('a follow-up sent to the other resource fails with previous_response_not_found', async () => {
    const first = await openai(simA).responses.create({ model: 'gpt', input: 'Hello' });
    const onB = await call(simB, 'POST', '/openai/v1/responses', { model: 'gpt', input: 'Again', previous_response_id: first.id });
    assert.equal(onB.status, 400);
    assert.deepEqual(onB.json, {
      error: {
        message: `Previous response with id '${first.id}' not found.`,
        type: 'invalid_request_error',
        param: 'previous_response_id',
        code: 'previous_response_not_found',
      },
    });
    const recorded = simB.recentRequests('gpt').at(-1);
    assert.deepEqual(recorded?.references, [first.id], 'the other resource saw which id was named');
    assert.equal(recorded?.status, 400);
    await assert.rejects(openai(simB).responses.create({ model: 'gpt', input: 'Again', previous_response_id: first.id }), BadRequestError);
    const onA = await openai(simA).responses.create({ model: 'gpt', input: 'Again', previous_response_id: first.id });
    assert.equal(onA.status, 'completed', 'the resource that made it continues it');
    assert.equal((await call(simB, 'GET', `/openai/v1/responses/${first.id}`)).status, 404);
    assert.equal((await call(simB, 'DELETE', `/openai/v1/responses/${first.id}`)).status, 404);
  });

  test('item references and echoed output items are only known where they were made', async () => {
    const first = await create(simA, { model: 'gpt', input: 'Hello', reasoning: { effort: 'low' } });
    const [reasoning, message] = first.output as Json[];
    const messageId = message?.id as string;
    for (const input of [
      [
        { type: 'item_reference', id: messageId },
        { role: 'user', content: 'Again' },
      ],
      [reasoning, { role: 'user', content: 'Again' }],
    ]) {
      const onB = await call(simB, 'POST', '/openai/v1/responses', { model: 'gpt', input });
      const named = (input[0] as Json).id as string;
      assert.equal(onB.status, 400);
      assert.deepEqual(onB.json, {
        error: { message: `Item with id '${named}' not found.`, type: 'invalid_request_error', param: 'input', code: null },
      });
      assert.deepEqual(simB.recentRequests('gpt').at(-1)?.references, [named]);
      const onA = await call(simA, 'POST', '/openai/v1/responses', { model: 'gpt', input });
      assert.equal(onA.status, 200, JSON.stringify(onA.json));
    }
    const referenced = await openai(simA).responses.create({
      model: 'gpt',
      input: [
        { type: 'item_reference', id: messageId },
        { role: 'user', content: 'Again' },
      ],
    });
    const items = await openai(simA).responses.inputItems.list(referenced.id, { order: 'asc' });
    assert.equal(items.data[0]?.id, messageId, 'the referenced item, as stored');
    assert.equal(referenced.usage?.input_tokens, 3 + (3 + 1 + 5) + (3 + 1 + 1), 'a referenced item is billed as input');
  });

  test('encrypted reasoning from another resource is invalid_encrypted_content; the resource that made it accepts it', async () => {
    const first = await create(simA, {
      model: 'gpt',
      input: 'Hello',
      store: false,
      reasoning: { effort: 'low' },
      include: ['reasoning.encrypted_content'],
    });
    const reasoning = (first.output as Json[])[0] as Json;
    const stateless = { type: 'reasoning', summary: [], encrypted_content: reasoning.encrypted_content };
    const body = {
      model: 'gpt',
      store: false,
      include: ['reasoning.encrypted_content'],
      reasoning: { effort: 'low' },
      input: [stateless, { role: 'user', content: 'Again' }],
    };
    const onB = await call(simB, 'POST', '/openai/v1/responses', body);
    const token = reasoning.encrypted_content as string;
    assert.equal(onB.status, 400);
    assert.deepEqual(onB.json, {
      error: {
        message: `The encrypted content ${token.slice(0, 4)}...${token.slice(-4)} could not be verified.`,
        type: 'invalid_request_error',
        param: null,
        code: 'invalid_encrypted_content',
      },
    });
    const onA = await call(simA, 'POST', '/openai/v1/responses', body);
    assert.equal(onA.status, 200, JSON.stringify(onA.json));
    const tampered = `${token.slice(0, -6)}AAAAAA`;
    const altered = await call(simA, 'POST', '/openai/v1/responses', { ...body, input: [{ ...stateless, encrypted_content: tampered }] });
    assert.equal((altered.json as { error: Json }).error.code, 'invalid_encrypted_content');
  });
});

describe('conversations', () => {
  test('create, retrieve, update, items, responses in a conversation, delete — through the SDK', async () => {
    const client = openai(simA);
    const conversation = await client.conversations.create({
      items: [{ type: 'message', role: 'user', content: 'Hello' }],
      metadata: { topic: 'demo' },
    });
    assert.match(conversation.id, /^conv_[0-9a-f]{48}$/);
    assert.deepEqual(Object.keys(conversation), ['id', 'object', 'created_at', 'metadata']);
    assert.equal(conversation.object, 'conversation');
    assert.deepEqual(conversation.metadata, { topic: 'demo' });
    assert.equal(simA.recentRequests('gpt').at(-1)?.path, '/openai/v1/conversations', 'counted against the first deployment');

    const response = await client.responses.create({ model: 'mini', input: 'Again', conversation: conversation.id });
    assert.deepEqual(response.conversation, { id: conversation.id });
    // Context: the conversation's "Hello" (3+1+1), then "Again" (3+1+1), priming 3.
    assert.equal(response.usage?.input_tokens, 13);
    const next = await client.responses.create({ model: 'gpt', input: 'More', conversation: { id: conversation.id } });
    assert.equal(next.usage?.input_tokens, 3 + 5 + 5 + (3 + 1 + 3) + 5, 'any deployment continues the conversation, with all its items');

    const items = await client.conversations.items.list(conversation.id, { order: 'asc' });
    assert.deepEqual(
      items.data.map((item) => (item.type === 'message' ? item.role : item.type)),
      ['user', 'user', 'assistant', 'user', 'assistant'],
    );
    const added = await client.conversations.items.create(conversation.id, { items: [{ type: 'message', role: 'user', content: 'Note' }] });
    assert.equal(added.data.length, 1);
    const noteId = added.data[0]?.id as string;
    const note = await client.conversations.items.retrieve(noteId, { conversation_id: conversation.id });
    assert.equal(note.id, noteId);
    const afterDelete = await client.conversations.items.delete(noteId, { conversation_id: conversation.id });
    assert.equal(afterDelete.id, conversation.id, 'deleting an item answers with the conversation');
    await assert.rejects(client.conversations.items.retrieve(noteId, { conversation_id: conversation.id }), NotFoundError);

    const updated = await client.conversations.update(conversation.id, { metadata: { topic: 'other' } });
    assert.deepEqual(updated.metadata, { topic: 'other' });
    assert.deepEqual((await client.conversations.retrieve(conversation.id)).metadata, { topic: 'other' });
    const deleted = await client.conversations.delete(conversation.id);
    assert.deepEqual(deleted, { id: conversation.id, object: 'conversation.deleted', deleted: true });
    await assert.rejects(client.conversations.retrieve(conversation.id), NotFoundError);
    assert.equal((await client.responses.retrieve(response.id)).id, response.id, 'its responses stay');
  });

  test('a conversation is unknown to the other resource', async () => {
    const conversation = await openai(simA).conversations.create({});
    const onB = await call(simB, 'POST', '/openai/v1/responses', { model: 'gpt', input: 'Hi', conversation: conversation.id });
    assert.equal(onB.status, 404);
    assert.deepEqual(onB.json, {
      error: { message: `Conversation with id '${conversation.id}' not found.`, type: 'invalid_request_error', param: null, code: null },
    });
    const get = await call(simB, 'GET', `/openai/v1/conversations/${conversation.id}/items`);
    assert.equal(get.status, 404);
    assert.deepEqual(simB.recentRequests('gpt').at(-1)?.references, [conversation.id]);
    const viaAzure = await azure(simA).conversations.items.list(conversation.id);
    assert.deepEqual(viaAzure.data, []);
    assert.equal(simA.recentRequests('gpt').at(-1)?.path, `/openai/conversations/${conversation.id}/items`);

    // The AzureOpenAI client (dated api-version) on the same conversation: items, then a streamed response in it.
    const client = azure(simA);
    const added = await client.conversations.items.create(conversation.id, {
      items: [{ type: 'message', role: 'user', content: 'Hello' }],
    });
    assert.equal(added.data[0]?.type, 'message');
    const stream = await client.responses.create({ model: 'gpt', input: 'Again', conversation: conversation.id, stream: true });
    let text = '';
    let usage: { input_tokens: number } | undefined;
    for await (const event of stream) {
      if (event.type === 'response.output_text.delta') text += event.delta;
      if (event.type === 'response.completed') usage = event.response.usage;
    }
    assert.equal(text, FIVE_WORDS);
    assert.equal(usage?.input_tokens, 3 + 5 + 5);
    const items = await client.conversations.items.list(conversation.id, { order: 'asc' });
    assert.equal(items.data.length, 3, 'the response appended its input and output');
    const second = await client.conversations.create({ metadata: { via: 'azure' } });
    assert.equal(simA.recentRequests('gpt').at(-1)?.path, '/openai/conversations');
    assert.deepEqual((await openai(simA).conversations.retrieve(second.id)).metadata, { via: 'azure' }, 'one resource, both surfaces');
  });
});

describe('limits and faults apply to the Responses API', () => {
  test('the rate limiter answers 429 RateLimitReached, and calls by id count against the creating deployment', async () => {
    const client = openai(simA);
    const created = await client.responses.create({ model: 'tiny', input: 'Hi' });
    await assert.rejects(client.responses.create({ model: 'tiny', input: 'Hi' }), (error: unknown) => {
      assert.ok(error instanceof RateLimitError);
      assert.equal((error.error as Json).code, 'RateLimitReached');
      assert.match(String((error.error as Json).message), /This request was for Responses_Create under Azure OpenAI API version v1/);
      assert.ok(Number(error.headers?.get('retry-after')) >= 1);
      return true;
    });
    const get = await call(simA, 'GET', `/openai/v1/responses/${created.id}`);
    assert.equal(get.status, 429, 'one request per 10 s, and the GET is the second');
    assert.match(String(((get.json as { error: Json }).error as Json).message), /Responses_Get/);
    assert.equal(simA.stats('tiny').throttled, 2);
  });

  test('status, reset-mid-stream and by-id faults, as on chat; a broken stream stores nothing', async () => {
    simA.setFault('faulty', { fault: { kind: 'status', status: 503 }, count: 1 });
    const failed = await call(simA, 'POST', '/openai/v1/responses', { model: 'faulty', input: 'Hi' });
    assert.equal(failed.status, 503);
    assert.equal(((failed.json as { error: Json }).error as Json).code, 'ServiceUnavailable');

    simA.setFault('faulty', { fault: { kind: 'reset-mid-stream', afterChunks: 3 }, count: 1 });
    const broken = await fetch(`${simA.url}/openai/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': KEY },
      body: JSON.stringify({ model: 'faulty', input: 'Hi', stream: true }),
    });
    let received = '';
    await assert.rejects(async () => {
      for await (const chunk of broken.body as unknown as AsyncIterable<Uint8Array>) received += Buffer.from(chunk).toString('utf8');
    });
    const events = sseEvents(received);
    assert.equal(events.length, 3);
    const brokenId = ((events[0] as Json).response as Json).id as string;
    assert.equal((await call(simA, 'GET', `/openai/v1/responses/${brokenId}`)).status, 404, 'an interrupted response is not kept');

    const created = await openai(simA).responses.create({ model: 'faulty', input: 'Hi' });
    simA.setFault('faulty', { fault: { kind: 'status', status: 500 }, count: 1 });
    const get = await call(simA, 'GET', `/openai/v1/responses/${created.id}`);
    assert.equal(get.status, 500, "a call by id meets the creating deployment's fault");
    assert.equal((await call(simA, 'GET', `/openai/v1/responses/${created.id}`)).status, 200);
    const stats = simA.stats('faulty');
    assert.equal(stats.failed, 3);
    assert.equal(stats.received, stats.served + stats.throttled + stats.failed + stats.aborted + stats.inFlight);
  });

  test('reset() forgets the stored state', async () => {
    const created = await create(simB, { model: 'gpt', input: 'Hi' });
    assert.equal((await call(simB, 'GET', `/openai/v1/responses/${created.id as string}`)).status, 200);
    simB.reset();
    assert.equal((await call(simB, 'GET', `/openai/v1/responses/${created.id as string}`)).status, 404);
  });
});
