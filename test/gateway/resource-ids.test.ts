import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodeId, encodeId, isUpstreamId, resourceTagOf } from '../../gateway/resource-ids.ts';

describe('resource ids', () => {
  const tag = resourceTagOf('https://east.openai.azure.com');

  test('a resource is its origin and base path, whatever the case or a trailing slash', () => {
    assert.match(tag, /^[0-9a-f]{10}$/);
    assert.equal(resourceTagOf('https://EAST.openai.azure.com/'), tag);
    assert.notEqual(resourceTagOf('https://west.openai.azure.com'), tag);
    assert.notEqual(resourceTagOf('https://east.openai.azure.com/proxy'), tag);
  });

  test('an id round-trips with its prefix kept, and carries its resource', () => {
    const upstream = 'resp_68af4c0e1b2a9f3d5e7c8b6a4d2f0e1c3b5a7d9f1e3c5b7a';
    const id = encodeId(upstream, tag);
    assert.ok(id.startsWith(`resp_sw1${tag}`));
    assert.deepEqual(decodeId(id), { tag, upstreamId: upstream });
    assert.deepEqual(decodeId(encodeId('msg_abc_def', tag)), { tag, upstreamId: 'msg_abc_def' });
  });

  test('strings that are not our ids decode to nothing', () => {
    for (const text of [
      'resp_68af',
      'resp_sw1',
      `resp_sw1${tag}`,
      'resp_sw1XYZ0123456abc',
      'sw1abcdef0123abc',
      '_sw10123456789abc',
      'plain',
    ]) {
      assert.equal(decodeId(text), undefined, text);
    }
  });

  test('only upstream-shaped ids are taken for upstream ids, never ours', () => {
    assert.ok(isUpstreamId('resp_68af4c'));
    assert.ok(isUpstreamId('fc_0A1b'));
    assert.equal(isUpstreamId(encodeId('resp_68af4c', tag)), false);
    for (const text of ['resp-68af', 'Resp_68af', 'resp_', 'resp_a b', 'call id']) assert.equal(isUpstreamId(text), false, text);
  });
});
