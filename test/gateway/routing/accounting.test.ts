import assert from 'node:assert/strict';
import { test } from 'node:test';
import { deploymentCharge, observe, worthObserving } from '../../../gateway/routing/accounting.ts';
import { isProvisioned } from '../../../gateway/upstream/headers.ts';
import type { DeploymentConfig } from '../../../shared/config/schema.ts';
import type { Lease } from '../../../shared/store/types.ts';

const deployment = (tpm?: number, rpm?: number) =>
  ({ id: 'a', endpoint: 'https://a.example', deployment: 'a', apiKey: 'k', priority: 1, weight: 1, tpm, rpm }) as DeploymentConfig;
const lease: Lease = { pool: 'p', deploymentId: 'a', leaseId: 'l', bucket: 0, tokens: 300, probe: false };
const usage = { promptTokens: 9, completionTokens: 20, totalTokens: 29 };

test('Standard keeps the arrival reservation unless usage was larger; PTU takes the real usage', () => {
  assert.equal(deploymentCharge(lease, usage, false), 300);
  assert.equal(deploymentCharge(lease, { ...usage, totalTokens: 500 }, false), 500);
  assert.equal(deploymentCharge(lease, usage, true), 29);
  assert.equal(deploymentCharge(lease, undefined, true), undefined, 'unknown usage keeps the reservation');
});

test('reads Standard remaining figures, and PTU utilization as remaining tokens of the tpm', () => {
  assert.deepEqual(observe({ 'x-ratelimit-remaining-tokens': '700', 'x-ratelimit-remaining-requests': '5' }, deployment(1000, 60)), {
    tpm: 1000,
    rpm: 60,
    remainingTokens: 700,
    remainingRequests: 5,
  });
  const ptu = { 'azure-openai-deployment-utilization': '87.5%' };
  assert.equal(isProvisioned(ptu), true);
  assert.deepEqual(observe(ptu, deployment(1000)), { tpm: 1000, rpm: undefined, remainingTokens: 125, remainingRequests: undefined });
  assert.equal(observe({ 'x-ratelimit-remaining-tokens': '700' }, deployment()), undefined, 'an unbudgeted deployment learns nothing');
  assert.equal(observe({}, deployment(1000)), undefined);
});

test('only figures near the limit are worth a store round trip', () => {
  assert.equal(worthObserving({ tpm: 1000, remainingTokens: 700 }), false);
  assert.equal(worthObserving({ tpm: 1000, remainingTokens: 200 }), true);
  assert.equal(worthObserving({ rpm: 60, remainingRequests: 2 }), true, 'rpm 60 allows 10 per short window');
  assert.equal(worthObserving({ rpm: 60, remainingRequests: 8 }), false);
  assert.equal(worthObserving(undefined), false);
});
