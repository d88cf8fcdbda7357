import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { apiVersionOf, matchProxiedRoute } from '../../../gateway/http/proxied-route.ts';

describe('proxied routes', () => {
  test('the three ways to address the gateway, and the inference operations', () => {
    assert.deepEqual(matchProxiedRoute('POST', '/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21'), {
      operation: 'chat/completions',
      pool: 'gpt-4o',
      query: 'api-version=2024-10-21',
      style: 'deployments',
    });
    assert.deepEqual(matchProxiedRoute('POST', '/openai/v1/embeddings'), {
      operation: 'embeddings',
      pool: undefined,
      query: '',
      style: 'v1',
    });
    assert.deepEqual(matchProxiedRoute('POST', '/v1/completions?x=1'), {
      operation: 'completions',
      pool: undefined,
      query: 'x=1',
      style: 'v1',
    });
    // The Vercel AI SDK with baseURL …/openai: no v1, no api-version, the pool in `model`.
    assert.deepEqual(matchProxiedRoute('POST', '/openai/chat/completions'), {
      operation: 'chat/completions',
      pool: undefined,
      query: '',
      style: 'openai',
    });
  });

  test('case-insensitive literals, a trailing slash, a decoded pool whose case is kept', () => {
    assert.deepEqual(matchProxiedRoute('POST', '/OpenAI/Deployments/My%20Pool/Chat/Completions/'), {
      operation: 'chat/completions',
      pool: 'My Pool',
      query: '',
      style: 'deployments',
    });
    assert.equal(matchProxiedRoute('POST', '/openai/deployments/%E0%A4%A/chat/completions'), 'bad-path');
  });

  test('Responses and conversations calls, named as the openai SDK names them, with the ids their paths hold', () => {
    const call = (method: string, url: string) => {
      const route = matchProxiedRoute(method, url);
      assert.ok(route && route !== 'bad-path', `${method} ${url}`);
      return route;
    };
    const create = call('POST', '/openai/v1/responses');
    assert.equal(create.operation, 'responses');
    assert.deepEqual(create.stateful, { name: 'responses.create', method: 'POST', segments: ['responses'], idSegments: [], hasBody: true });
    assert.equal(call('POST', '/openai/responses?api-version=2025-04-01-preview').style, 'openai');
    assert.equal(call('POST', '/openai/deployments/p/responses?api-version=2025-04-01-preview').stateful?.name, 'responses.create');
    assert.equal(call('POST', '/v1/responses/compact').operation, 'responses');
    const cases: [string, string, string, string[], number[]][] = [
      ['GET', '/openai/v1/responses/resp_AbC', 'responses.retrieve', ['responses', 'resp_AbC'], [1]],
      ['DELETE', '/openai/responses/resp_1?api-version=x', 'responses.delete', ['responses', 'resp_1'], [1]],
      ['GET', '/v1/Responses/resp_1/Input_Items/', 'responses.input_items', ['responses', 'resp_1', 'input_items'], [1]],
      ['POST', '/openai/v1/responses/resp_1/cancel', 'responses.cancel', ['responses', 'resp_1', 'cancel'], [1]],
      ['POST', '/openai/v1/conversations', 'conversations.create', ['conversations'], []],
      ['GET', '/openai/v1/conversations/conv_1', 'conversations.retrieve', ['conversations', 'conv_1'], [1]],
      ['POST', '/openai/v1/conversations/conv_1', 'conversations.update', ['conversations', 'conv_1'], [1]],
      ['DELETE', '/openai/v1/conversations/conv_1', 'conversations.delete', ['conversations', 'conv_1'], [1]],
      ['GET', '/openai/v1/conversations/conv_1/items', 'conversations.items.list', ['conversations', 'conv_1', 'items'], [1]],
      ['POST', '/openai/v1/conversations/conv_1/items', 'conversations.items.create', ['conversations', 'conv_1', 'items'], [1]],
      [
        'GET',
        '/openai/v1/conversations/conv_1/items/msg_2',
        'conversations.items.retrieve',
        ['conversations', 'conv_1', 'items', 'msg_2'],
        [1, 3],
      ],
      [
        'DELETE',
        '/openai/v1/conversations/conv_1/items/msg_2',
        'conversations.items.delete',
        ['conversations', 'conv_1', 'items', 'msg_2'],
        [1, 3],
      ],
    ];
    for (const [method, url, name, segments, idSegments] of cases) {
      const route = call(method, url);
      assert.equal(route.operation, undefined, url);
      assert.deepEqual(route.stateful, { name, method, segments, idSegments, hasBody: method === 'POST' }, `${method} ${url}`);
    }
    assert.equal(matchProxiedRoute('GET', '/openai/v1/responses/%E0%A4%A'), 'bad-path');
  });

  test('anything else is left to the Express app', () => {
    for (const [method, url] of [
      ['GET', '/openai/deployments/p/chat/completions'],
      ['GET', '/openai/v1/chat/completions'],
      ['POST', '/openai/deployments/p/images/generations'],
      ['POST', '/openai/deployments//chat/completions'],
      ['POST', '/openai/deployments/p/chat/completions/extra'],
      ['POST', '/openai/deployments/a/b/chat/completions'],
      ['POST', '/v2/chat/completions'],
      ['POST', '/healthz'],
      ['POST', '/'],
      ['GET', '/openai/v1/models'],
      ['PUT', '/openai/v1/responses/resp_1'],
      ['POST', '/openai/v1/responses/resp_1'],
      ['GET', '/openai/v1/responses/resp_1/other'],
      ['GET', '/openai/v1/conversations'],
      ['PATCH', '/openai/v1/conversations/conv_1'],
      ['POST', '/openai/v1/conversations/conv_1/items/msg_2'],
      ['GET', '/openai/v1/conversations/conv_1/other'],
    ] as const) {
      assert.equal(matchProxiedRoute(method, url), undefined, `${method} ${url}`);
    }
  });

  test('api-version: exactly one value, else none', () => {
    assert.equal(apiVersionOf('api-version=2024-10-21'), '2024-10-21');
    assert.equal(apiVersionOf('a=1&api-version=preview'), 'preview');
    assert.equal(apiVersionOf('api-version=1&api-version=2'), undefined);
    assert.equal(apiVersionOf(''), undefined);
  });
});
