/**
 * The clients people really use, unmodified, through three gateway instances (one Redis) in front of
 * three simulated Azure resources, each holding the same deployments: `chat` (chat completions and
 * the Responses API) and `embed`. Every pool spans the three resources, round-robin, so a follow-up
 * the gateway did not route by the id it names lands on another resource than its first turn, where
 * the simulator (state per instance, as Azure keeps it per resource) refuses it.
 *
 * Each multi-turn chain sends its n-th request through instance n mod 3 (test/helpers/client-chains.ts);
 * at the end the chain's affinity is checked against the simulators: one resource answered and
 * received every request of it, the others none, and the ids the clients named reached it as its own.
 *
 * What each client sends (read from its source in node_modules and recorded on the wire):
 * - openai `OpenAI` (baseURL …/openai/v1): `Authorization: Bearer`; POST /openai/v1/responses
 *   {model, input, max_output_tokens, previous_response_id | conversation, stream}; GET|DELETE
 *   /openai/v1/responses/{id} (DELETE with `accept: *\/*`); GET …/{id}/input_items;
 *   POST /openai/v1/conversations `{}`. Path ids are URI-encoded.
 * - openai `AzureOpenAI` (endpoint): `api-key`; `?api-version=` on every call; Responses at
 *   /openai/responses[/{id}] (never under /deployments); chat at /openai/deployments/{deployment}/chat/completions.
 * - @ai-sdk/azure `createAzure({ baseURL: …/openai })`: the host is not *.openai.azure.com, so it sends
 *   `${baseURL}${path}` with no /v1 and no api-version: POST /openai/responses, /openai/chat/completions,
 *   /openai/embeddings; `api-key`; model = the name given to azure(…). No `store` unless asked; a
 *   history replayed as messages sends the assistant's earlier answer as `{type:'item_reference', id}`.
 * - LangChain `ChatOpenAI` (configuration.baseURL …/openai/v1): `Authorization: Bearer`; with
 *   useResponsesApi a replayed AIMessage goes back as the whole output item, its `id` included.
 *   `AzureChatOpenAI` (azureOpenAIEndpoint + deployment): baseURL …/openai/deployments/{deployment},
 *   so its Responses calls are POST /openai/deployments/{pool}/responses?api-version= with the body's
 *   `model` the class default ('gpt-3.5-turbo') unless `model` is set; `api-key`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI, { AzureOpenAI, NotFoundError } from 'openai';
import { createAzure } from '@ai-sdk/azure';
import { embed, embedMany, generateText, streamText } from 'ai';
import { AzureChatOpenAI, ChatOpenAI } from '@langchain/openai';
import { AIMessage, HumanMessage } from '@langchain/core/messages';
import type { Simulator } from '../../shared/simulator/index.ts';
import { CLIENT_KEY, startGateway, testConfig, type RunningGateway } from '../helpers/gateway.ts';
import { simulator, uniquePool } from '../helpers/fixtures.ts';
import { ClientTraffic, type Chain } from '../helpers/client-chains.ts';

const TIMEOUT_MS = 10_000;
const API_VERSION = '2025-04-01-preview';

describe('real clients through three gateway instances in front of three Azure resources', () => {
  const sims: Simulator[] = [];
  const gateways: RunningGateway[] = [];
  const chatPool = uniquePool('chat');
  const embedPool = uniquePool('embed');
  let traffic: ClientTraffic;

  before(async () => {
    for (let i = 0; i < 3; i++) {
      sims.push(
        await simulator([
          { name: 'chat', model: 'gpt-4o-2024-08-06' },
          { name: 'embed', model: 'text-embedding-3-small' },
        ]),
      );
    }
    const pool = (deployment: string, model: string) => ({
      strategy: 'round-robin',
      deployments: sims.map((sim, i) => ({ id: `r${i}`, endpoint: sim.url, deployment, model })),
    });
    const config = testConfig({ pools: { [chatPool]: pool('chat', 'gpt-4o'), [embedPool]: pool('embed', 'text-embedding-3-small') } });
    for (let i = 0; i < 3; i++) gateways.push(await startGateway(config));
    traffic = new ClientTraffic(
      gateways.map((g) => g.url),
      sims.map((sim, i) => ({ id: `r${i}`, sim, deployments: ['chat', 'embed'] })),
    );
  });
  after(async () => {
    await Promise.all(gateways.map((g) => g.close()));
    await Promise.all(sims.map((s) => s.close()));
  });

  const openaiClient = (chain: Chain) =>
    new OpenAI({ baseURL: `${chain.baseUrl}/openai/v1`, apiKey: CLIENT_KEY, maxRetries: 0, timeout: TIMEOUT_MS, fetch: chain.fetch });
  const azureClient = (chain: Chain, deployment?: string) =>
    new AzureOpenAI({
      endpoint: chain.baseUrl,
      apiKey: CLIENT_KEY,
      apiVersion: API_VERSION,
      ...(deployment ? { deployment } : {}),
      maxRetries: 0,
      timeout: TIMEOUT_MS,
      fetch: chain.fetch,
    });
  const aiProvider = (chain: Chain) => createAzure({ baseURL: `${chain.baseUrl}/openai`, apiKey: CLIENT_KEY, fetch: chain.fetch });
  const call = { maxRetries: 0, abortSignal: undefined as AbortSignal | undefined };
  const bounded = () => ({ ...call, abortSignal: AbortSignal.timeout(TIMEOUT_MS) });

  describe('openai OpenAI client, baseURL /openai/v1', () => {
    test(
      'responses.create answers whole and as a stream, and the id from the stream carries a follow-up',
      { timeout: 15_000 },
      async () => {
        const chain = traffic.chain('openai-stream');
        const client = openaiClient(chain);
        const whole = await client.responses.create({ model: chatPool, input: 'Hello!', max_output_tokens: 32 });
        assert.equal(whole.object, 'response');
        assert.equal(whole.status, 'completed');
        assert.match(whole.id, /^resp_/);
        assert.ok(whole.output_text.length > 0, 'output_text');
        assert.ok((whole.usage?.output_tokens ?? 0) > 0, 'usage');
        await traffic.assertOneResource(chain);

        const streamed = traffic.chain('openai-stream-follow-up');
        const streaming = openaiClient(streamed);
        const stream = await streaming.responses.create({ model: chatPool, input: 'Hello!', max_output_tokens: 32, stream: true });
        const types: string[] = [];
        let text = '';
        let completedId: string | undefined;
        for await (const event of stream) {
          types.push(event.type);
          if (event.type === 'response.output_text.delta') text += event.delta;
          if (event.type === 'response.completed') completedId = event.response.id;
        }
        assert.equal(types[0], 'response.created');
        assert.equal(types.at(-1), 'response.completed');
        assert.ok(types.includes('response.output_text.delta'));
        assert.ok(text.length > 0);
        assert.ok(completedId);
        const next = await streaming.responses.create({
          model: chatPool,
          input: 'And then?',
          max_output_tokens: 32,
          previous_response_id: completedId,
        });
        assert.equal(next.status, 'completed');
        assert.equal(next.previous_response_id, completedId, 'the follow-up names the id the client was given');
        await traffic.assertOneResource(streamed);
      },
    );

    test(
      'a previous_response_id chain of 4 turns, each through another instance; then retrieve, input items, delete',
      { timeout: 15_000 },
      async () => {
        const chain = traffic.chain('openai-previous');
        const client = openaiClient(chain);
        let previous: string | undefined;
        const ids: string[] = [];
        for (let turn = 1; turn <= 4; turn++) {
          const response = await client.responses.create({
            model: chatPool,
            input: `Turn ${turn}`,
            max_output_tokens: 32,
            ...(previous ? { previous_response_id: previous } : {}),
          });
          assert.equal(response.status, 'completed', `turn ${turn}`);
          assert.equal(response.previous_response_id ?? undefined, previous, `turn ${turn} continues the one before`);
          previous = response.id;
          ids.push(response.id);
        }
        assert.equal(new Set(ids).size, 4);
        const last = ids.at(-1)!;
        const retrieved = await client.responses.retrieve(last);
        assert.equal(retrieved.id, last);
        assert.equal(retrieved.previous_response_id, ids[2]);
        const items = [];
        for await (const item of client.responses.inputItems.list(last)) items.push(item);
        assert.ok(items.length > 0, 'the last turn has input items');
        await client.responses.delete(last);
        await assert.rejects(client.responses.retrieve(last), NotFoundError, 'a deleted response is gone');
        await traffic.assertOneResource(chain);
      },
    );

    test('conversations.create, then two responses in the conversation through other instances', { timeout: 15_000 }, async () => {
      const chain = traffic.chain('openai-conversation');
      const client = openaiClient(chain);
      const conversation = await client.conversations.create({});
      assert.equal(conversation.object, 'conversation');
      assert.match(conversation.id, /^conv_/);
      for (const input of ['First in the conversation', 'Second in the conversation']) {
        const response = await client.responses.create({ model: chatPool, input, max_output_tokens: 32, conversation: conversation.id });
        assert.equal(response.status, 'completed', input);
      }
      await traffic.assertOneResource(chain);
    });
  });

  describe('openai AzureOpenAI client, endpoint + api-version', () => {
    test('responses.create, a follow-up and retrieve (/openai/responses?api-version=)', { timeout: 15_000 }, async () => {
      const chain = traffic.chain('azure-responses');
      const client = azureClient(chain);
      const first = await client.responses.create({ model: chatPool, input: 'Hello!', max_output_tokens: 32 });
      assert.equal(first.status, 'completed');
      const second = await client.responses.create({
        model: chatPool,
        input: 'More',
        max_output_tokens: 32,
        previous_response_id: first.id,
      });
      assert.equal(second.status, 'completed');
      assert.equal(second.previous_response_id, first.id);
      const retrieved = await client.responses.retrieve(second.id);
      assert.equal(retrieved.id, second.id);
      assert.ok(chain.exchanges.every((e) => e.path.includes(`api-version=${API_VERSION}`)));
      await traffic.assertOneResource(chain);
    });

    test('chat.completions with deployment = pool, whole and streamed', { timeout: 15_000 }, async () => {
      const chain = traffic.chain('azure-chat');
      const client = azureClient(chain, chatPool);
      const completion = await client.chat.completions.create({
        model: chatPool,
        messages: [{ role: 'user', content: 'Hello!' }],
        max_tokens: 5,
      });
      assert.equal(completion.object, 'chat.completion');
      assert.equal(completion.usage?.completion_tokens, 5);
      const stream = await client.chat.completions.create({
        model: chatPool,
        messages: [{ role: 'user', content: 'Hello!' }],
        max_tokens: 4,
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = '';
      let usage: number | undefined;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? '';
        if (chunk.usage) usage = chunk.usage.completion_tokens;
      }
      assert.equal(text.trim().split(/\s+/).length, 4);
      assert.equal(usage, 4);
      assert.deepEqual(
        chain.exchanges.map((e) => [e.method, e.path, e.status]),
        [
          ['POST', `/openai/deployments/${chatPool}/chat/completions?api-version=${API_VERSION}`, 200],
          ['POST', `/openai/deployments/${chatPool}/chat/completions?api-version=${API_VERSION}`, 200],
        ],
      );
    });
  });

  describe('Vercel AI SDK, createAzure({ baseURL: /openai })', () => {
    test(
      'generateText with azure(pool), a previousResponseId turn and a turn that replays the history (item references)',
      { timeout: 15_000 },
      async () => {
        const chain = traffic.chain('ai-generate');
        const azure = aiProvider(chain);
        const first = await generateText({ model: azure(chatPool), prompt: 'Hello!', maxOutputTokens: 32, ...bounded() });
        assert.ok(first.text.length > 0);
        const responseId = first.providerMetadata?.azure?.responseId;
        assert.equal(typeof responseId, 'string', 'the provider reports the response id');
        const second = await generateText({
          model: azure(chatPool),
          prompt: 'And then?',
          maxOutputTokens: 32,
          providerOptions: { azure: { previousResponseId: responseId as string } },
          ...bounded(),
        });
        assert.ok(second.text.length > 0);
        // The history as messages: the assistant's answer goes back as an item_reference to its stored item.
        const third = await generateText({
          model: azure(chatPool),
          messages: [{ role: 'user', content: 'Hello!' }, ...first.response.messages, { role: 'user', content: 'Go on.' }],
          maxOutputTokens: 32,
          ...bounded(),
        });
        assert.ok(third.text.length > 0);
        const replay = chain.exchanges[2];
        assert.ok(replay && replay.named.length > 0, `the replayed history named a stored item: ${chain}`);
        await traffic.assertOneResource(chain);
      },
    );

    test('streamText with azure(pool) and a streamed previousResponseId follow-up', { timeout: 15_000 }, async () => {
      const chain = traffic.chain('ai-stream');
      const azure = aiProvider(chain);
      const streamed = async (options: { prompt: string; previousResponseId?: string }) => {
        const result = streamText({
          model: azure(chatPool),
          prompt: options.prompt,
          maxOutputTokens: 32,
          ...(options.previousResponseId ? { providerOptions: { azure: { previousResponseId: options.previousResponseId } } } : {}),
          ...bounded(),
        });
        let text = '';
        for await (const part of result.fullStream) {
          if (part.type === 'error') throw part.error;
          if (part.type === 'text-delta') text += part.text;
        }
        return { text, responseId: (await result.providerMetadata)?.azure?.responseId };
      };
      const first = await streamed({ prompt: 'Hello!' });
      assert.ok(first.text.length > 0);
      assert.equal(typeof first.responseId, 'string');
      const second = await streamed({ prompt: 'And then?', previousResponseId: first.responseId as string });
      assert.ok(second.text.length > 0);
      await traffic.assertOneResource(chain);
    });

    test('azure.chat(pool): generateText and streamText on chat completions', { timeout: 15_000 }, async () => {
      const chain = traffic.chain('ai-chat');
      const azure = aiProvider(chain);
      const whole = await generateText({ model: azure.chat(chatPool), prompt: 'Hello!', maxOutputTokens: 5, ...bounded() });
      assert.equal(whole.text.trim().split(/\s+/).length, 5);
      assert.equal(whole.usage.outputTokens, 5);
      const result = streamText({ model: azure.chat(chatPool), prompt: 'Hello!', maxOutputTokens: 4, ...bounded() });
      let text = '';
      for await (const part of result.fullStream) {
        if (part.type === 'error') throw part.error;
        if (part.type === 'text-delta') text += part.text;
      }
      assert.equal(text.trim().split(/\s+/).length, 4);
      assert.equal((await result.usage).outputTokens, 4);
      assert.deepEqual(
        chain.exchanges.map((e) => [e.method, e.path, e.status]),
        [
          ['POST', '/openai/chat/completions', 200],
          ['POST', '/openai/chat/completions', 200],
        ],
      );
    });

    test('azure.embedding(pool): embed and embedMany', { timeout: 15_000 }, async () => {
      const chain = traffic.chain('ai-embed');
      const azure = aiProvider(chain);
      const one = await embed({ model: azure.embedding(embedPool), value: 'sunny day at the beach', ...bounded() });
      assert.ok(one.embedding.length > 0);
      const many = await embedMany({ model: azure.embedding(embedPool), values: ['a', 'b', 'c'], ...bounded() });
      assert.equal(many.embeddings.length, 3);
      assert.ok(many.embeddings.every((e) => e.length === one.embedding.length));
      assert.deepEqual(
        chain.exchanges.map((e) => [e.method, e.path, e.status]),
        [
          ['POST', '/openai/embeddings', 200],
          ['POST', '/openai/embeddings', 200],
        ],
      );
    });
  });

  describe('LangChain', () => {
    const chatOpenAI = (chain: Chain, useResponsesApi: boolean) =>
      new ChatOpenAI({
        model: chatPool,
        apiKey: CLIENT_KEY,
        maxTokens: 32,
        maxRetries: 0,
        timeout: TIMEOUT_MS,
        useResponsesApi,
        configuration: { baseURL: `${chain.baseUrl}/openai/v1`, fetch: chain.fetch },
      });
    const azureChatOpenAI = (chain: Chain, useResponsesApi: boolean) =>
      new AzureChatOpenAI({
        azureOpenAIEndpoint: chain.baseUrl,
        azureOpenAIApiKey: CLIENT_KEY,
        azureOpenAIApiVersion: API_VERSION,
        azureOpenAIApiDeploymentName: chatPool,
        maxTokens: 32,
        maxRetries: 0,
        timeout: TIMEOUT_MS,
        useResponsesApi,
        configuration: { fetch: chain.fetch },
      });
    const streamedText = async (model: ChatOpenAI | AzureChatOpenAI, input: string) => {
      let text = '';
      for await (const chunk of await model.stream(input)) text += chunk.text;
      return text;
    };

    test('ChatOpenAI on chat completions: invoke and stream', { timeout: 15_000 }, async () => {
      const chain = traffic.chain('lc-chat');
      const model = chatOpenAI(chain, false);
      const message = await model.invoke('Hello!');
      assert.ok(message.text.length > 0);
      assert.ok((message.usage_metadata?.output_tokens ?? 0) > 0);
      assert.ok((await streamedText(model, 'Hello!')).length > 0);
      assert.deepEqual(
        chain.exchanges.map((e) => [e.method, e.path, e.status]),
        [
          ['POST', '/openai/v1/chat/completions', 200],
          ['POST', '/openai/v1/chat/completions', 200],
        ],
      );
    });

    test(
      'ChatOpenAI with useResponsesApi: invoke, stream, the history replayed (items with ids) and previous_response_id',
      { timeout: 15_000 },
      async () => {
        const streamChain = traffic.chain('lc-responses-stream');
        assert.ok((await streamedText(chatOpenAI(streamChain, true), 'Hello!')).length > 0);
        await traffic.assertOneResource(streamChain);

        const chain = traffic.chain('lc-responses');
        const model = chatOpenAI(chain, true);
        const first = await model.invoke('Hello!');
        assert.ok(first.text.length > 0);
        assert.match(String(first.id), /^resp_/, "the AIMessage's id is the response id");
        // The AIMessage goes back as the output item it came from, with the item's id.
        const second = await model.invoke([new HumanMessage('Hello!'), first, new HumanMessage('Go on.')]);
        assert.ok(second.text.length > 0);
        assert.ok(chain.exchanges[1]!.named.length > 0, `the replayed history named the stored item: ${chain}`);
        const third = await model.invoke('And then?', { previous_response_id: String(second.id) });
        assert.ok(third.text.length > 0);
        assert.ok(third instanceof AIMessage);
        await traffic.assertOneResource(chain);
      },
    );

    test('AzureChatOpenAI on chat completions: invoke and stream', { timeout: 15_000 }, async () => {
      const chain = traffic.chain('lc-azure-chat');
      const model = azureChatOpenAI(chain, false);
      const message = await model.invoke('Hello!');
      assert.ok(message.text.length > 0);
      assert.ok((await streamedText(model, 'Hello!')).length > 0);
      const path = `/openai/deployments/${chatPool}/chat/completions?api-version=${API_VERSION}`;
      assert.deepEqual(
        chain.exchanges.map((e) => [e.method, e.path, e.status]),
        [
          ['POST', path, 200],
          ['POST', path, 200],
        ],
      );
    });

    test(
      'AzureChatOpenAI with useResponsesApi (/openai/deployments/{pool}/responses): invoke and a previous_response_id follow-up',
      { timeout: 15_000 },
      async () => {
        const chain = traffic.chain('lc-azure-responses');
        const model = azureChatOpenAI(chain, true);
        const first = await model.invoke('Hello!');
        assert.ok(first.text.length > 0);
        const second = await model.invoke('And then?', { previous_response_id: String(first.id) });
        assert.ok(second.text.length > 0);
        assert.equal(chain.exchanges[0]?.path, `/openai/deployments/${chatPool}/responses?api-version=${API_VERSION}`);
        await traffic.assertOneResource(chain);
      },
    );
  });

  test('no id the gateway handed out reached any simulator: every reference there is an upstream id', () => {
    assert.ok(traffic.handedOut.size > 0, 'the clients were handed ids');
    traffic.assertNoHandedOutIdUpstream();
  });
});
