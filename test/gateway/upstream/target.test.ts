import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildPools, type Deployment } from '../../../gateway/pools.ts';
import { DEFAULT_API_VERSION, targetOf, type TargetRequest } from '../../../gateway/upstream/target.ts';
import { testConfig } from '../../helpers/gateway.ts';

/** A deployment as the request path sees it, built from a validated config. */
function deployment(options: { endpoint?: string; deployment?: string; apiVersion?: string } = {}): Deployment {
  const config = testConfig({
    pools: { p: { deployments: [{ id: 'east', endpoint: options.endpoint ?? 'https://east.example.com', ...options }] } },
  });
  return buildPools(config).get('p')!.deployments.get('east')!;
}

const clientBody = Buffer.from('{"stream":true,"messages":[]}');
const usageBody = Buffer.from('{"stream":true,"messages":[],"stream_options":{"include_usage":true}}');
const chat = (request: Partial<TargetRequest> = {}): TargetRequest => ({
  operation: 'chat/completions',
  apiVersion: '2024-10-21',
  stateful: undefined,
  body: clientBody,
  bodyWithUsage: undefined,
  ...request,
});

test("the path is the endpoint's base path, then the deployment's name encoded, then the operation", () => {
  const east = deployment({ endpoint: 'https://acct.example.com/azure/openai-proxy/', deployment: 'gpt 4o/east?x' });
  assert.equal(
    targetOf(east, chat()).path,
    '/azure/openai-proxy/openai/deployments/gpt%204o%2Feast%3Fx/chat/completions?api-version=2024-10-21',
    'a slash or ? in the name cannot change the route',
  );
  assert.equal(
    targetOf(deployment(), chat({ operation: 'embeddings' })).path,
    '/openai/deployments/east/embeddings?api-version=2024-10-21',
  );
});

test("api-version: the deployment's override, else the client's, else the latest GA", () => {
  const pinned = deployment({ apiVersion: '2024-06-01' });
  assert.match(targetOf(pinned, chat({ apiVersion: '2025-01-01-preview' })).path, /\?api-version=2024-06-01$/);
  assert.match(targetOf(pinned, chat({ apiVersion: undefined })).path, /\?api-version=2024-06-01$/);
  assert.match(targetOf(deployment(), chat({ apiVersion: '2025-01-01-preview' })).path, /\?api-version=2025-01-01-preview$/);
  assert.match(targetOf(deployment(), chat({ apiVersion: undefined })).path, new RegExp(`\\?api-version=${DEFAULT_API_VERSION}$`));
  assert.equal(DEFAULT_API_VERSION, '2024-10-21');
  // The client's api-version is its own text: encoded, it cannot add query parameters upstream.
  assert.match(targetOf(deployment(), chat({ apiVersion: '1&x=2' })).path, /\?api-version=1%26x%3D2$/);
});

test('the usage body goes only where it was made and the api-version accepts stream_options', () => {
  for (const apiVersion of ['2024-09-01-preview', '2024-10-21', '2025-04-01-preview', 'preview', 'latest']) {
    const target = targetOf(deployment(), chat({ apiVersion, bodyWithUsage: usageBody }));
    assert.equal(target.body, usageBody, apiVersion);
    assert.equal(target.askedForUsage, true, apiVersion);
  }
  for (const apiVersion of ['2024-08-01-preview', '2024-06-01', '2024-02-01']) {
    const target = targetOf(deployment(), chat({ apiVersion, bodyWithUsage: usageBody }));
    assert.equal(target.body, clientBody, `${apiVersion}: the client's own bytes`);
    assert.equal(target.askedForUsage, false, apiVersion);
  }
  const noUsageBody = targetOf(deployment(), chat({ apiVersion: '2024-10-21', bodyWithUsage: undefined }));
  assert.equal(noUsageBody.body, clientBody);
  assert.equal(noUsageBody.askedForUsage, false);
});

test("the deployment's api-version decides about usage, not the client's", () => {
  const old = deployment({ apiVersion: '2024-06-01' });
  const target = targetOf(old, chat({ apiVersion: '2024-10-21', bodyWithUsage: usageBody }));
  assert.equal(target.body, clientBody, 'stream_options would be refused by 2024-06-01');
  assert.equal(target.askedForUsage, false);
  const recent = deployment({ apiVersion: '2024-10-21' });
  assert.equal(targetOf(recent, chat({ apiVersion: '2024-06-01', bodyWithUsage: usageBody })).askedForUsage, true);
  // With no api-version at all the default one is used, and it accepts stream_options.
  assert.equal(targetOf(deployment(), chat({ apiVersion: undefined, bodyWithUsage: usageBody })).askedForUsage, true);
});
