import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AzureError } from '../../../gateway/errors.ts';
import { matchProxiedRoute, type ProxiedRoute } from '../../../gateway/http/proxied-route.ts';
import { prepareStateful, type StatefulRequest } from '../../../gateway/http/stateful-request.ts';
import { buildPools, ResourceDirectory } from '../../../gateway/pools.ts';
import { encodeId, encodeOpaque, resourceTagOf } from '../../../gateway/resource-ids.ts';
import { testConfig } from '../../helpers/gateway.ts';

const EAST = 'https://east.openai.azure.com';
const WEST = 'https://west.openai.azure.com';
const config = testConfig({
  pools: {
    chat: {
      deployments: [
        { id: 'e1', endpoint: EAST },
        { id: 'w1', endpoint: `${WEST}/` },
        { id: 'e2', endpoint: EAST.toUpperCase() },
      ],
    },
    mini: { deployments: [{ id: 'w-mini', endpoint: WEST }] },
  },
});
const pools = buildPools(config);
const resources = new ResourceDirectory(pools);
const east = (id: string) => encodeId(id, resourceTagOf(EAST));
const west = (id: string) => encodeId(id, resourceTagOf(WEST));

function prepare(method: string, url: string, body?: Record<string, unknown>): StatefulRequest | AzureError {
  const route = matchProxiedRoute(method, url) as ProxiedRoute;
  assert.ok(route.stateful, url);
  const query = url.includes('?') ? url.slice(url.indexOf('?') + 1) : '';
  return prepareStateful(
    { route: route.stateful, pathPool: route.pool, body, query, apiVersion: undefined, dated: false },
    pools,
    resources,
  );
}
const ok = (result: StatefulRequest | AzureError) => {
  assert.ok(!('status' in result), JSON.stringify(result));
  return result;
};
const refused = (result: StatefulRequest | AzureError) => {
  assert.ok('status' in result, 'refused');
  return result;
};

describe('stateful requests', () => {
  test('a first turn names no state: routed freely, model kept for the deployment name', () => {
    const { pool, affinity, call } = ok(prepare('POST', '/openai/v1/responses', { model: 'chat', input: 'hi', store: false }));
    assert.equal(pool.name, 'chat');
    assert.equal(affinity, undefined);
    assert.equal(call.model, 'deployment');
  });

  test('ids anywhere in the body are restored, and pin to their resource (of any case or trailing slash)', () => {
    const body = {
      model: 'chat',
      previous_response_id: east('resp_1'),
      input: [
        { type: 'item_reference', id: east('msg_2') },
        { type: 'reasoning', id: east('rs_3'), encrypted_content: encodeOpaque('gAAA', resourceTagOf(EAST)) },
      ],
      metadata: { note: 'resp_sw1 lookalike' },
    };
    const { affinity, call } = ok(prepare('POST', '/openai/v1/responses', body));
    assert.deepEqual(affinity?.excluded, ['w1']);
    assert.equal(affinity?.host, 'east.openai.azure.com');
    assert.equal(affinity?.reference, east('resp_1'));
    assert.deepEqual(call.body, {
      model: 'chat',
      previous_response_id: 'resp_1',
      input: [
        { type: 'item_reference', id: 'msg_2' },
        { type: 'reasoning', id: 'rs_3', encrypted_content: 'gAAA' },
      ],
      metadata: { note: 'resp_sw1 lookalike' },
    });
    assert.equal(call.restored.get('resp_1'), east('resp_1'));
  });

  test('a call by id: path and query restored, routed to the first pool with a deployment on the resource', () => {
    const { pool, affinity, call } = ok(
      prepare('GET', `/openai/v1/responses/${west('resp_9')}/input_items?after=${west('msg_8')}&limit=5`),
    );
    assert.equal(pool.name, 'chat');
    assert.deepEqual(affinity?.excluded, ['e1', 'e2']);
    assert.equal(call.subpath, 'responses/resp_9/input_items');
    assert.equal(call.query, '&after=msg_8&limit=5');
    assert.equal(call.body, undefined);
  });

  test('a new conversation without a model goes to the first pool; its model, if any, only names the pool', () => {
    assert.equal(ok(prepare('POST', '/openai/v1/conversations', {})).pool.name, 'chat');
    const named = ok(prepare('POST', '/openai/v1/conversations', { model: 'mini', items: [] }));
    assert.equal(named.pool.name, 'mini');
    assert.equal(named.call.model, 'drop');
  });

  test('refusals: unknown ids 404, mixed resources and a pool without the owner 400', () => {
    const forged = encodeId('resp_1', 'ffffffffff');
    assert.equal(refused(prepare('GET', `/openai/v1/responses/${forged}`)).status, 404);
    assert.equal(refused(prepare('GET', '/openai/v1/responses/resp_raw')).status, 404);
    assert.equal(refused(prepare('POST', '/openai/v1/responses', { model: 'chat', previous_response_id: 'resp_raw' })).status, 404);
    assert.equal(refused(prepare('POST', '/openai/v1/responses', { model: 'chat', conversation: { id: 'conv_raw' } })).status, 404);
    assert.equal(refused(prepare('POST', '/openai/v1/responses', { model: 'chat', previous_response_id: forged })).status, 404);
    const mixed = refused(
      prepare('POST', '/openai/v1/responses', { model: 'chat', previous_response_id: east('resp_1'), input: [{ id: west('msg_1') }] }),
    );
    assert.equal(mixed.status, 400);
    assert.match(mixed.message, /two Azure resources \(east\.openai\.azure\.com and west\.openai\.azure\.com\)/);
    const elsewhere = refused(prepare('POST', '/openai/v1/responses', { model: 'mini', previous_response_id: east('resp_1') }));
    assert.equal(elsewhere.status, 400);
    assert.match(elsewhere.message, /pool mini has no deployment/);
    assert.equal(refused(prepare('POST', '/openai/v1/responses', { model: 'nope' })).status, 404);
    assert.equal(refused(prepare('POST', '/openai/v1/responses', { input: 'no model' })).status, 400);
    // Raw ids inside input items are the client's business: left as they are, routing free.
    assert.equal(ok(prepare('POST', '/openai/v1/responses', { model: 'chat', input: [{ id: 'msg_raw' }] })).affinity, undefined);
  });

  test('a body nested deeper than any id is not walked past the limit', () => {
    let deep: Record<string, unknown> = { id: east('msg_deep') };
    for (let i = 0; i < 100; i++) deep = { nested: deep };
    const { affinity } = ok(prepare('POST', '/openai/v1/responses', { model: 'chat', input: [deep] }));
    assert.equal(affinity, undefined);
  });
});
