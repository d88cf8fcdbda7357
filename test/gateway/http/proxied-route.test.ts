import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { apiVersionOf, matchProxiedRoute } from '../../../gateway/http/proxied-route.ts';

describe('proxied routes', () => {
  test('the three families and three operations', () => {
    assert.deepEqual(matchProxiedRoute('POST', '/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21'), {
      operation: 'chat/completions',
      pool: 'gpt-4o',
      query: 'api-version=2024-10-21',
    });
    assert.deepEqual(matchProxiedRoute('POST', '/openai/v1/embeddings'), { operation: 'embeddings', pool: undefined, query: '' });
    assert.deepEqual(matchProxiedRoute('POST', '/v1/completions?x=1'), { operation: 'completions', pool: undefined, query: 'x=1' });
  });

  test('case-insensitive literals, a trailing slash, a decoded pool whose case is kept', () => {
    assert.deepEqual(matchProxiedRoute('POST', '/OpenAI/Deployments/My%20Pool/Chat/Completions/'), {
      operation: 'chat/completions',
      pool: 'My Pool',
      query: '',
    });
    assert.equal(matchProxiedRoute('POST', '/openai/deployments/%E0%A4%A/chat/completions'), 'bad-path');
  });

  test('anything else is left to the Express app', () => {
    for (const [method, url] of [
      ['GET', '/openai/deployments/p/chat/completions'],
      ['POST', '/openai/deployments/p/images/generations'],
      ['POST', '/openai/deployments//chat/completions'],
      ['POST', '/openai/deployments/p/chat/completions/extra'],
      ['POST', '/openai/deployments/a/b/chat/completions'],
      ['POST', '/v2/chat/completions'],
      ['POST', '/healthz'],
      ['POST', '/'],
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
