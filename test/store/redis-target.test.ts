/** The Redis target from the environment: one Redis or a cluster's seeds, checked at start, described without secrets. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { readEnv } from '../../gateway/env.ts';
import { describeRedisTarget, parseClusterNodes, redisTargetFrom, storeKind } from '../../shared/store/redis-target.ts';

describe('Redis target', () => {
  test('REDIS_CLUSTER_NODES: host:port seeds, or URLs whose user, password and TLS apply to every node', () => {
    assert.deepEqual(parseClusterNodes(' 10.0.0.1:7000, redis-b:7001 ,'), {
      kind: 'cluster',
      nodes: [
        { host: '10.0.0.1', port: 7000 },
        { host: 'redis-b', port: 7001 },
      ],
    });
    assert.deepEqual(parseClusterNodes('rediss://app:s%3Acret@a:6380,rediss://app:s%3Acret@b:6380,c:6380'), {
      kind: 'cluster',
      nodes: [
        { host: 'a', port: 6380 },
        { host: 'b', port: 6380 },
        { host: 'c', port: 6380 },
      ],
      username: 'app',
      password: 's:cret',
      tls: true,
    });
    assert.deepEqual(parseClusterNodes('[::1]:7000').nodes, [{ host: '::1', port: 7000 }]);
    for (const bad of ['', 'a', 'a:', 'a:0', 'a:70000', 'redis://a', 'a:7000/1'])
      assert.throws(() => parseClusterNodes(bad), /seed|no host:port/, JSON.stringify(bad));
    assert.throws(() => parseClusterNodes('redis://:one@a:1,redis://:two@b:2'), /disagree/);
  });

  test('the environment: one of the two, never both; the start log names the kind and hides the password', () => {
    assert.equal(readEnv({}).redis, undefined);
    assert.deepEqual(readEnv({ REDIS_URL: 'redis://r:6379' }).redis, { kind: 'single', url: 'redis://r:6379' });
    assert.equal(readEnv({ REDIS_CLUSTER_NODES: 'a:1,b:2' }).redis?.kind, 'cluster');
    assert.equal(readEnv({ REDIS_URL: '', REDIS_CLUSTER_NODES: 'a:1' }).redis?.kind, 'cluster', 'an empty variable is unset');
    assert.throws(
      () => readEnv({ REDIS_URL: 'redis://r:6379', REDIS_CLUSTER_NODES: 'a:1' }),
      /REDIS_CLUSTER_NODES: set REDIS_URL .* not both/,
    );
    assert.throws(() => redisTargetFrom({ REDIS_URL: 'redis://r:6379', REDIS_CLUSTER_NODES: 'a:1' }), /not both/);
    assert.throws(() => readEnv({ REDIS_CLUSTER_NODES: 'a' }), /REDIS_CLUSTER_NODES: must be comma-separated host:port seeds/);

    assert.deepEqual([undefined, { kind: 'single', url: 'redis://r' } as const, parseClusterNodes('a:1')].map(storeKind), [
      'memory',
      'redis',
      'redis-cluster',
    ]);
    assert.equal(describeRedisTarget({ kind: 'single', url: 'rediss://app:secret@r:6380/2' }), 'rediss://app:***@r:6380/2');
    assert.equal(describeRedisTarget(parseClusterNodes('redis://:secret@a:1,b:2')), 'cluster redis://***@a:1,b:2');
    assert.equal(describeRedisTarget(parseClusterNodes('rediss://app:secret@a:1')), 'cluster rediss://app@a:1');
    assert.ok(!describeRedisTarget(parseClusterNodes('rediss://app:secret@a:1')).includes('secret'));
  });
});
