/**
 * The Responses API through two gateway instances on one Redis, in front of three simulated Azure
 * resources: ids carry their resource, follow-ups reach it from either instance (and after a
 * restart), nothing of a conversation reaches another resource, and an owner that cannot serve is
 * told as such.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { decodeId, encodeId } from '../../gateway/resource-ids.ts';
import type { Simulator } from '../../shared/simulator/index.ts';
import { simulator, sleep, uniquePool } from '../helpers/fixtures.ts';
import { CLIENT_KEY, startGateway, testConfig, type RunningGateway } from '../helpers/gateway.ts';

const RESOURCES = ['east', 'west', 'north'] as const;
type Resource = (typeof RESOURCES)[number];

interface ResponseBody {
  id: string;
  status: string;
  previous_response_id: string | null;
  output: { id: string; type: string; content?: { text: string }[] }[];
  usage: { input_tokens: number; output_tokens: number; total_tokens: number };
  error?: { code: string; message: string };
}

describe('Responses API with affinity', () => {
  const sims = new Map<Resource, Simulator>();
  let gateways: RunningGateway[] = [];
  let pool: string;
  let eastOnly: string;
  let westOnly: string;
  let breaking: string;
  let config: ReturnType<typeof testConfig>;

  before(async () => {
    for (const name of RESOURCES) sims.set(name, await simulator([`gpt-${name}`]));
    pool = uniquePool('assistant');
    eastOnly = uniquePool('east-only');
    westOnly = uniquePool('west-only');
    breaking = uniquePool('breaking');
    const deployment = (name: Resource) => ({ id: name, endpoint: sims.get(name)!.url, deployment: `gpt-${name}`, model: 'gpt-4o' });
    config = testConfig({
      pools: {
        [pool]: { strategy: 'round-robin', deployments: RESOURCES.map(deployment) },
        [eastOnly]: { deployments: [deployment('east')] },
        [westOnly]: { deployments: [deployment('west')] },
        [breaking]: { strategy: 'round-robin', deployments: RESOURCES.map(deployment) },
      },
      gateway: { defaultCooldownMs: 1000 },
    });
    gateways = await Promise.all([startGateway(config), startGateway(config)]);
  });
  afterEach(() => {
    for (const sim of sims.values()) sim.reset();
  });
  after(async () => {
    await Promise.all(gateways.map((g) => g.close()));
    await Promise.all([...sims.values()].map((s) => s.close()));
  });

  const call = (gateway: RunningGateway, method: string, path: string, body?: unknown) =>
    fetch(`${gateway.url}${path}`, {
      method,
      headers: { 'content-type': 'application/json', 'api-key': CLIENT_KEY },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(10_000),
    });
  const create = (gateway: RunningGateway, body: Record<string, unknown>) =>
    call(gateway, 'POST', '/openai/v1/responses', { model: pool, input: 'Hello there', max_output_tokens: 20, ...body });
  /** Requests each resource received, with what they named. */
  const received = () =>
    Object.fromEntries(RESOURCES.map((name) => [name, sims.get(name)!.recentRequests(`gpt-${name}`)])) as Record<
      Resource,
      ReturnType<Simulator['recentRequests']>
    >;
  const servedBy = (response: Response) => response.headers.get('x-gateway-deployment') as Resource;

  test('ids carry their resource; a chain of turns alternating instances stays on it, upstream sees only its own ids', async () => {
    const first = await create(gateways[0]!, {});
    assert.equal(first.status, 200);
    const owner = servedBy(first);
    let body = (await first.json()) as ResponseBody;
    const tag = decodeId(body.id)?.tag;
    assert.ok(tag, `the id ${body.id} carries its resource`);
    for (const item of body.output) assert.equal(decodeId(item.id)?.tag, tag, `item ${item.id}`);
    for (let turn = 1; turn <= 3; turn++) {
      const next = await create(gateways[turn % 2]!, { previous_response_id: body.id, input: `turn ${turn}` });
      const text = await next.text();
      assert.equal(next.status, 200, text);
      assert.equal(servedBy(next), owner);
      const previous = body.id;
      body = JSON.parse(text) as ResponseBody;
      assert.equal(body.previous_response_id, previous, 'the echo is the id the client sent');
    }
    const seen = received();
    assert.equal(seen[owner].length, 4);
    for (const name of RESOURCES) if (name !== owner) assert.equal(seen[name].length, 0, `${name} received nothing`);
    for (const request of seen[owner]) {
      assert.equal(request.model, `gpt-${owner}`, 'model is the deployment name upstream');
      for (const reference of request.references) assert.equal(decodeId(reference), undefined, `raw id upstream: ${reference}`);
    }
    assert.equal(seen[owner][3]!.references.length, 1);
  });

  test('a stream: every event is passed on with its ids tagged, and its follow-up reaches the owner', async () => {
    const response = await create(gateways[0]!, { stream: true });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /text\/event-stream/);
    const owner = servedBy(response);
    const text = await response.text();
    const events = text
      .split('\n\n')
      .filter((event) => event.includes('data:'))
      .map((event) => JSON.parse(event.slice(event.indexOf('{'))) as Record<string, unknown>);
    const types = events.map((event) => event.type);
    assert.deepEqual(types.slice(0, 4), [
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
    ]);
    assert.equal(types.at(-1), 'response.completed');
    assert.ok(types.includes('response.output_text.delta'));
    for (const event of events) {
      const item = event.item as { id: string } | undefined;
      if (item) assert.ok(decodeId(item.id), `item id ${item.id} tagged`);
      if (typeof event.item_id === 'string') assert.ok(decodeId(event.item_id), `item_id ${event.item_id} tagged`);
    }
    const completed = events.at(-1)!.response as ResponseBody;
    assert.ok(decodeId(completed.id));
    const next = await create(gateways[1]!, { previous_response_id: completed.id, stream: true });
    assert.equal(next.status, 200);
    assert.equal(servedBy(next), owner);
    await next.text();
  });

  test('retrieve, input_items and delete by id from the other instance; a deleted response is the owner’s 404', async () => {
    const created = await create(gateways[0]!, {});
    const owner = servedBy(created);
    const { id } = (await created.json()) as ResponseBody;
    const retrieved = await call(gateways[1]!, 'GET', `/openai/v1/responses/${id}`);
    assert.equal(retrieved.status, 200);
    assert.equal(servedBy(retrieved), owner);
    assert.equal(((await retrieved.json()) as ResponseBody).id, id);
    const items = await call(gateways[1]!, 'GET', `/openai/v1/responses/${id}/input_items`);
    assert.equal(items.status, 200);
    const list = (await items.json()) as { data: { id: string }[]; first_id: string };
    assert.ok(list.data.length > 0 && list.data.every((item) => decodeId(item.id)));
    assert.equal(list.first_id, list.data[0]!.id);
    // The AzureOpenAI client's style: /openai/responses/{id}?api-version=…
    const dated = await call(gateways[0]!, 'GET', `/openai/responses/${id}?api-version=2025-04-01-preview`);
    assert.equal(dated.status, 200);
    const deleted = await call(gateways[0]!, 'DELETE', `/openai/v1/responses/${id}`);
    assert.equal(deleted.status, 200);
    assert.deepEqual(await deleted.json(), { id, object: 'response', deleted: true });
    const gone = await call(gateways[1]!, 'GET', `/v1/responses/${id}`);
    assert.equal(gone.status, 404);
    const message = ((await gone.json()) as ResponseBody).error!.message;
    assert.ok(message.includes(id), `the owner's 404 quotes the id the client sent: ${message}`);
    const methods = received()[owner].map((r) => `${r.method} ${r.apiVersion ?? ''}`);
    assert.deepEqual(methods, ['POST ', 'GET ', 'GET ', 'GET 2025-04-01-preview', 'DELETE ', 'GET ']);
  });

  test('an id no configured resource holds is a 404 that reaches no resource', async () => {
    const { id } = (await (await create(gateways[0]!, {})).json()) as ResponseBody;
    const forged = encodeId(decodeId(id)!.upstreamId, 'ffffffffff');
    for (const [method, path, body] of [
      ['GET', `/openai/v1/responses/${forged}`, undefined],
      ['GET', '/openai/v1/responses/resp_68af4c0e1b2a9f3d', undefined],
      ['DELETE', `/openai/v1/conversations/conv_1234`, undefined],
      ['POST', '/openai/v1/responses', { model: pool, input: 'x', previous_response_id: forged }],
      ['POST', '/openai/v1/responses', { model: pool, input: 'x', previous_response_id: decodeId(id)!.upstreamId }],
    ] as const) {
      const before = Object.values(received()).flat().length;
      const response = await call(gateways[1]!, method, path, body);
      assert.equal(response.status, 404, `${method} ${path}`);
      const error = ((await response.json()) as ResponseBody).error!;
      assert.equal(error.code, 'not_found');
      assert.match(error.message, /No deployment of this gateway holds/);
      assert.equal(Object.values(received()).flat().length, before, 'nothing reached a resource');
    }
  });

  test('an owner that is throttled: 429 naming it with a working retry-after, nothing sent elsewhere; then it serves again', async () => {
    const created = await create(gateways[0]!, {});
    const owner = servedBy(created);
    const { id } = (await created.json()) as ResponseBody;
    sims.get(owner)!.setFault(`gpt-${owner}`, { fault: { kind: 'storm-429', retryAfterMs: 1000 } });
    const refused = await create(gateways[1]!, { previous_response_id: id });
    assert.equal(refused.status, 429);
    const retryAfter = Number(refused.headers.get('retry-after'));
    assert.ok(retryAfter >= 1 && retryAfter <= 2, `retry-after ${retryAfter}`);
    const error = ((await refused.json()) as ResponseBody).error!;
    assert.match(error.message, new RegExp(`${id} lives on the Azure resource 127\\.0\\.0\\.1:\\d+`));
    for (const name of RESOURCES) if (name !== owner) assert.equal(received()[name].length, 0, `${name} received nothing`);
    // Chat traffic of the same pool still flows to the other resources meanwhile.
    const free = await create(gateways[0]!, { store: false });
    assert.equal(free.status, 200);
    assert.notEqual(servedBy(free), owner);
    sims.get(owner)!.setFault(`gpt-${owner}`, null);
    await sleep(retryAfter * 1000);
    const served = await create(gateways[1]!, { previous_response_id: id });
    assert.equal(served.status, 200);
    assert.equal(servedBy(served), owner);
  });

  test('with maxWaitMs, a follow-up waits for its throttled owner, outside the queue: free requests behind it are not held up', async () => {
    const waiting = uniquePool('waiting');
    const deployments = RESOURCES.map((name) => ({ id: name, endpoint: sims.get(name)!.url, deployment: `gpt-${name}`, model: 'gpt-4o' }));
    const waitConfig = testConfig({ pools: { [waiting]: { strategy: 'round-robin', maxWaitMs: 5000, deployments } } });
    const instances = await Promise.all([startGateway(waitConfig), startGateway(waitConfig)]);
    try {
      const created = await call(instances[0]!, 'POST', '/openai/v1/responses', { model: waiting, input: 'hi', max_output_tokens: 20 });
      const owner = servedBy(created);
      const { id } = (await created.json()) as ResponseBody;
      sims.get(owner)!.setFault(`gpt-${owner}`, { fault: { kind: 'storm-429', retryAfterMs: 1500 }, count: 1 });
      const startedAt = Date.now();
      const pinned = call(instances[1]!, 'POST', '/openai/v1/responses', { model: waiting, input: 'more', previous_response_id: id });
      await sleep(300);
      const freeStartedAt = Date.now();
      const free = await call(instances[0]!, 'POST', '/openai/v1/responses', { model: waiting, input: 'free', store: false });
      const freeMs = Date.now() - freeStartedAt;
      assert.equal(free.status, 200);
      assert.ok(freeMs < 1000, `a free request took ${freeMs} ms behind a waiting pinned one`);
      const answered = await pinned;
      assert.equal(answered.status, 200, await answered.text());
      assert.equal(servedBy(answered), owner);
      assert.ok(Date.now() - startedAt >= 1400, 'the pinned request waited for its owner’s retry-after');
      const others = RESOURCES.filter((name) => name !== owner);
      assert.ok(
        others.every((name) => received()[name].every((r) => !r.references.length)),
        'no follow-up went elsewhere',
      );
    } finally {
      await Promise.all(instances.map((g) => g.close()));
    }
  });

  test('an owner that fails: its own error, then 503 once its circuit is open, never an attempt elsewhere', async () => {
    const created = await call(gateways[0]!, 'POST', '/openai/v1/responses', { model: breaking, input: 'hi', max_output_tokens: 20 });
    const owner = servedBy(created);
    const { id } = (await created.json()) as ResponseBody;
    sims.get(owner)!.setFault(`gpt-${owner}`, { fault: { kind: 'status', status: 500 } });
    const statuses: number[] = [];
    let open: Response | undefined;
    // The breaker opens after its volume threshold (5) of failures; the follow-ups meanwhile get the owner's own 500.
    for (let i = 0; i < 10 && !open; i++) {
      const response = await call(gateways[i % 2]!, 'POST', '/openai/v1/responses', {
        model: breaking,
        input: 'x',
        previous_response_id: id,
      });
      statuses.push(response.status);
      if (response.status === 503) open = response;
      else await response.text();
    }
    assert.ok(open, `statuses: ${statuses.join(',')}`);
    assert.ok(
      statuses.slice(0, -1).every((status) => status === 500),
      `statuses: ${statuses.join(',')}`,
    );
    assert.ok(Number(open.headers.get('retry-after')) >= 1);
    const error = ((await open.json()) as ResponseBody).error!;
    assert.match(error.message, /lives on the Azure resource .* out of rotation \(failing, or drained\)/);
    for (const name of RESOURCES) if (name !== owner) assert.equal(received()[name].length, 0, `${name} received nothing`);
    // Free requests of the pool go on, to the other resources.
    const free = await call(gateways[0]!, 'POST', '/openai/v1/responses', { model: breaking, input: 'free', store: false });
    assert.equal(free.status, 200);
    assert.notEqual(servedBy(free), owner);
    sims.get(owner)!.setFault(`gpt-${owner}`, null);
  });

  test('store: false without references is routed freely; an item reference pins like previous_response_id', async () => {
    const owners = new Set<string>();
    for (let i = 0; i < 6; i++) owners.add(servedBy(await create(gateways[i % 2]!, { store: false })));
    assert.ok(owners.size >= 2, `spread over ${[...owners].join(', ')}`);
    const created = await create(gateways[0]!, {});
    const owner = servedBy(created);
    const message = ((await created.json()) as ResponseBody).output.find((item) => item.type === 'message')!;
    for (let i = 0; i < 3; i++) {
      const next = await create(gateways[1]!, {
        input: [
          { type: 'item_reference', id: message.id },
          { role: 'user', content: 'and?' },
        ],
      });
      assert.equal(next.status, 200, await next.text());
      assert.equal(servedBy(next), owner);
    }
  });

  test('encrypted reasoning content comes back tagged and pins the request that sends it back', async () => {
    const created = await create(gateways[0]!, { store: false, reasoning: { effort: 'low' }, include: ['reasoning.encrypted_content'] });
    assert.equal(created.status, 200);
    const owner = servedBy(created);
    const reasoning = ((await created.json()) as ResponseBody).output.find((item) => item.type === 'reasoning') as
      { id: string; encrypted_content: string; summary: unknown[] } | undefined;
    assert.ok(reasoning?.encrypted_content.startsWith('sw1'), 'encrypted content carries its resource');
    for (let i = 0; i < 3; i++) {
      const next = await create(gateways[i % 2]!, {
        store: false,
        input: [
          { ...reasoning, id: undefined },
          { role: 'user', content: 'go on' },
        ],
      });
      assert.equal(next.status, 200, await next.text());
      assert.equal(servedBy(next), owner);
    }
  });

  test('a conversation created without a model lives where it was made; its turns follow it from any instance', async () => {
    const created = await call(gateways[0]!, 'POST', '/openai/v1/conversations', {
      items: [{ type: 'message', role: 'user', content: 'hi' }],
    });
    assert.equal(created.status, 200);
    const owner = servedBy(created);
    const conversation = ((await created.json()) as { id: string }).id;
    assert.ok(decodeId(conversation));
    for (let i = 0; i < 3; i++) {
      const turn = await create(gateways[(i + 1) % 2]!, { conversation, input: `turn ${i}` });
      assert.equal(turn.status, 200, await turn.text());
      assert.equal(servedBy(turn), owner);
    }
    const items = await call(gateways[1]!, 'GET', `/openai/v1/conversations/${conversation}/items`);
    assert.equal(items.status, 200);
    assert.ok(((await items.json()) as { data: unknown[] }).data.length >= 7);
  });

  test('state of two resources in one request, or a pool with no deployment on the owner: 400', async () => {
    const east = (await (await call(gateways[0]!, 'POST', '/openai/v1/responses', { model: eastOnly, input: 'a' })).json()) as ResponseBody;
    const west = (await (await call(gateways[0]!, 'POST', '/openai/v1/responses', { model: westOnly, input: 'b' })).json()) as ResponseBody;
    const mixed = await create(gateways[1]!, {
      previous_response_id: east.id,
      input: [{ type: 'item_reference', id: west.output[0]!.id }],
    });
    assert.equal(mixed.status, 400);
    assert.match(((await mixed.json()) as ResponseBody).error!.message, /two Azure resources/);
    const elsewhere = await call(gateways[1]!, 'POST', '/openai/v1/responses', {
      model: westOnly,
      input: 'c',
      previous_response_id: east.id,
    });
    assert.equal(elsewhere.status, 400);
    assert.match(((await elsewhere.json()) as ResponseBody).error!.message, new RegExp(`pool ${westOnly} has no deployment`));
    // The same resource through another pool is fine: the state is the resource's, not the deployment's.
    const samePlace = await create(gateways[1]!, { previous_response_id: east.id });
    assert.equal(samePlace.status, 200);
    assert.equal(servedBy(samePlace), 'east');
  });

  test('a follow-up after every instance restarted: the id alone finds the resource', async () => {
    const created = await create(gateways[0]!, {});
    const owner = servedBy(created);
    const { id } = (await created.json()) as ResponseBody;
    await Promise.all(gateways.map((g) => g.close()));
    gateways = await Promise.all([startGateway(config), startGateway(config)]);
    const next = await create(gateways[1]!, { previous_response_id: id });
    assert.equal(next.status, 200);
    assert.equal(servedBy(next), owner);
  });

  test('usage is reconciled from the response: the real input of a follow-up, earlier turns included', async () => {
    const created = await create(gateways[0]!, { input: 'A first question, with a few words in it.' });
    const first = (await created.json()) as ResponseBody;
    const next = await create(gateways[0]!, { previous_response_id: first.id, input: 'And?' });
    const second = (await next.json()) as ResponseBody;
    assert.ok(second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens, 'the earlier turn is billed again');
    const metrics = await (await fetch(`${gateways[0]!.url}/metrics`)).text();
    const prompt = metrics
      .split('\n')
      .filter((line) => line.startsWith('spillway_tokens_total') && line.includes(`pool="${pool}"`) && line.includes('kind="prompt"'))
      .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
    assert.ok(prompt >= first.usage.input_tokens + second.usage.input_tokens, `prompt tokens counted: ${prompt}`);
  });

  test('client quotas count Responses traffic: creates and calls by id alike', async () => {
    const client = uniquePool('metered');
    const quotaConfig = testConfig({
      pools: {
        [pool]: {
          strategy: 'round-robin',
          deployments: RESOURCES.map((name) => ({ id: name, endpoint: sims.get(name)!.url, deployment: `gpt-${name}` })),
        },
      },
      clients: [{ name: client, apiKey: CLIENT_KEY, rpm: 3 }],
    });
    const metered = await startGateway(quotaConfig);
    try {
      const created = await create(metered, {});
      assert.equal(created.status, 200);
      const { id } = (await created.json()) as ResponseBody;
      assert.equal((await create(metered, { previous_response_id: id })).status, 200);
      assert.equal((await call(metered, 'GET', `/openai/v1/responses/${id}`)).status, 200);
      const refused = await call(metered, 'GET', `/openai/v1/responses/${id}`);
      assert.equal(refused.status, 429);
      assert.match(
        ((await refused.json()) as ResponseBody).error!.message,
        new RegExp(`Client ${client} has exceeded its request rate limit`),
      );
    } finally {
      await metered.close();
    }
  });

  test('models list the pools; the Vercel AI SDK’s /openai/{operation} without api-version reaches chat', async () => {
    const models = await call(gateways[0]!, 'GET', '/openai/v1/models');
    assert.equal(models.status, 200);
    const list = (await models.json()) as { object: string; data: { id: string; object: string }[] };
    assert.equal(list.object, 'list');
    assert.ok(list.data.some((model) => model.id === pool && model.object === 'model'));
    assert.equal((await fetch(`${gateways[0]!.url}/v1/models`)).status, 401);
    const chat = await call(gateways[1]!, 'POST', '/openai/chat/completions', { model: pool, messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(chat.status, 200);
    assert.equal(((await chat.json()) as { object: string }).object, 'chat.completion');
  });
});
