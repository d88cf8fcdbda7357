import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';

test('the global setup hands every test file a Redis that answers', async () => {
  assert.ok(process.env.REDIS_URL, 'REDIS_URL is set by test/global-setup.ts');
  const redis = new Redis(process.env.REDIS_URL);
  try {
    assert.equal(await redis.ping(), 'PONG');
  } finally {
    redis.disconnect();
  }
});
