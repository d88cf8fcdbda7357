import assert from 'node:assert/strict';
import { test } from 'node:test';
import { retryAfterMs } from '../../../gateway/upstream/retry-after.ts';

test('retry-after-ms wins over retry-after', () => {
  assert.equal(retryAfterMs({ 'retry-after-ms': '1500.2', 'retry-after': '9' }), 1501);
});

test('retry-after in seconds and as an HTTP date', () => {
  assert.equal(retryAfterMs({ 'retry-after': '15' }), 15000);
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(retryAfterMs({ 'retry-after': 'Thu, 01 Jan 2026 00:00:30 GMT' }, now), 30000);
});

test('falls back to the reset headers, including the hyphenated 2023 variant', () => {
  assert.equal(retryAfterMs({ 'x-ratelimit-reset-tokens': '55' }), 55000);
  assert.equal(retryAfterMs({ 'x-rate-limit-reset-tokens': '7' }), 7000);
  assert.equal(retryAfterMs({ 'x-ratelimit-reset-requests': '2' }), 2000);
});

test('zero, negative and garbage values name no time', () => {
  assert.equal(retryAfterMs({ 'retry-after': '0', 'x-ratelimit-reset-tokens': '0' }), undefined);
  assert.equal(retryAfterMs({ 'retry-after-ms': '-5' }), undefined);
  assert.equal(retryAfterMs({ 'retry-after': 'soon' }), undefined);
  assert.equal(retryAfterMs({}), undefined);
});
