import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AzureError } from '../../../gateway/errors.ts';
import { AttemptHistory, finalAnswer, type Answer, type FailedAttempt } from '../../../gateway/routing/attempt-history.ts';
import type { Refusal } from '../../../gateway/routing/leasing.ts';
import { poolSetup } from '../../helpers/collaborators.ts';

// Two deployments, every setting at its schema default (defaultCooldownMs 10 s).
const { pool, settings } = poolSetup([{ id: 'a' }, { id: 'b' }]);

const noBudget = (retryAfterMs: number): Refusal => ({ ok: false, reason: 'no-budget', retryAfterMs });
const unavailable = (retryAfterMs: number): Refusal => ({ ok: false, reason: 'unavailable', retryAfterMs });

function history(...failures: (FailedAttempt & { excluded?: boolean })[]): AttemptHistory {
  const h = new AttemptHistory();
  for (const { excluded, ...failure } of failures) {
    if (excluded) h.exclude(failure.deployment);
    h.record(failure);
  }
  return h;
}

const throttle = (deployment: string, inMs: number): FailedAttempt => ({ deployment, status: 429, cooldownUntil: Date.now() + inMs });
const missing = (deployment: string, inMs: number) => ({
  deployment,
  status: 404,
  body: Buffer.from('{"error":{"code":"DeploymentNotFound"}}'),
  cooldownUntil: Date.now() + inMs,
  excluded: true,
});

function gatewayError(answer: Answer): AzureError {
  assert.ok('error' in answer, `expected a gateway error, got a relay of ${JSON.stringify(answer)}`);
  return answer.error;
}

/** A 429 whose retry time is within [minMs, maxMs]; both headers agree with it. */
function saturated(answer: Answer, detail: string, minMs: number, maxMs: number): void {
  const error = gatewayError(answer);
  assert.equal(error.status, 429);
  assert.equal(error.code, '429');
  assert.ok(error.message.includes(`Every deployment of ${pool.name} is ${detail}.`), error.message);
  const ms = Number(error.headers?.['retry-after-ms']);
  assert.ok(ms >= minMs && ms <= maxMs, `retry-after-ms ${ms} within [${minMs}, ${maxMs}]`);
  assert.equal(error.headers?.['retry-after'], String(Math.ceil(ms / 1000)), 'retry-after: the same time in whole seconds, rounded up');
  assert.match(error.message, new RegExp(`retry after ${Math.ceil(ms / 1000)} second`));
}

describe('finalAnswer after a refusal', () => {
  test('with no failure, the refusal’s reason picks the wording and its retry time is passed on', () => {
    saturated(finalAnswer(new AttemptHistory(), pool, settings, noBudget(2500)), 'at its token or request budget', 2500, 2500);
    saturated(
      finalAnswer(new AttemptHistory(), pool, settings, { ok: false, reason: 'queued', retryAfterMs: 40 }),
      'at its token or request budget',
      40,
      40,
    );
    saturated(finalAnswer(new AttemptHistory(), pool, settings, unavailable(7000)), 'throttled or unavailable', 7000, 7000);
  });

  test('a retry time under a second still says 1 second, and is never 0', () => {
    const answer = gatewayError(finalAnswer(new AttemptHistory(), pool, settings, noBudget(0)));
    assert.deepEqual(answer.headers, { 'retry-after': '1', 'retry-after-ms': '1' });
  });

  test('after throttles: the sooner of the refusal’s time and the soonest cooldown', () => {
    // b is cooling for 3 s, the store says 8 s for what is left: b frees first.
    saturated(finalAnswer(history(throttle('b', 3000)), pool, settings, noBudget(8000)), 'throttled or unavailable', 2000, 3000);
    // Two throttles: the sooner cooldown counts; the refusal is sooner still.
    saturated(
      finalAnswer(history(throttle('a', 5000), throttle('b', 4000)), pool, settings, unavailable(1500)),
      'throttled or unavailable',
      1500,
      1500,
    );
    saturated(
      finalAnswer(history(throttle('a', 5000), throttle('b', 4000)), pool, settings, unavailable(9000)),
      'throttled or unavailable',
      3000,
      4000,
    );
  });

  test('after a throttle the wording is “throttled or unavailable”, whatever the refusal’s reason', () => {
    saturated(finalAnswer(history(throttle('a', 5000)), pool, settings, noBudget(200)), 'throttled or unavailable', 200, 200);
  });

  test('when every deployment was tried, the store’s figure (about none of them) is ignored', () => {
    // Both misnamed (DeploymentNotFound cools down and excludes): only their cooldowns tell when.
    saturated(
      finalAnswer(history(missing('a', 60_000), missing('b', 30_000)), pool, settings, noBudget(50)),
      'throttled or unavailable',
      29_000,
      30_000,
    );
    // Every deployment tried and nothing known about any: the default cooldown.
    const tried = new AttemptHistory();
    tried.exclude('a');
    tried.exclude('b');
    saturated(
      finalAnswer(tried, pool, settings, noBudget(50)),
      'at its token or request budget',
      settings.defaultCooldownMs,
      settings.defaultCooldownMs,
    );
  });

  test('one deployment tried of two: the refusal’s figure still counts', () => {
    saturated(finalAnswer(history(missing('a', 60_000)), pool, settings, noBudget(700)), 'throttled or unavailable', 700, 700);
  });

  test('a failure that was not a throttle is relayed, refusal or not', () => {
    const failure: FailedAttempt = { deployment: 'a', status: 500, body: Buffer.from('{"error":{"code":"InternalServerError"}}') };
    assert.deepEqual(finalAnswer(history({ ...failure, excluded: true }), pool, settings, unavailable(1000)), { relay: failure });
  });
});

describe('finalAnswer when the attempts or the deadline ran out', () => {
  test('only throttles: 429 until the soonest cooldown', () => {
    saturated(finalAnswer(history(throttle('a', 6000), throttle('b', 2000)), pool, settings), 'throttled or unavailable', 1000, 2000);
  });

  test('the last deployment error is relayed when not every failure was a throttle', () => {
    const last: FailedAttempt = { deployment: 'b', status: 503, headers: { 'retry-after': '1' }, body: Buffer.from('busy') };
    assert.deepEqual(finalAnswer(history({ deployment: 'a', status: 500 }, last), pool, settings), { relay: last });
    // A throttle after a 500 is still relayed as the last error: the pool was not only full.
    const throttled = throttle('b', 1000);
    assert.deepEqual(finalAnswer(history({ deployment: 'a', status: 500 }, throttled), pool, settings), { relay: throttled });
  });

  test('transport failures: 504 after a timeout, 502 after a connection failure', () => {
    const timedOut = gatewayError(
      finalAnswer(history({ deployment: 'a', status: 500 }, { deployment: 'b', timedOut: true }), pool, settings),
    );
    assert.deepEqual([timedOut.status, timedOut.code], [504, 'GatewayTimeout']);
    const unreachable = gatewayError(finalAnswer(history({ deployment: 'a', timedOut: false }), pool, settings));
    assert.deepEqual([unreachable.status, unreachable.code], [502, 'BadGateway']);
  });

  test('a DeploymentNotFound is never relayed: 502 (the gateway’s config is at fault, not the client)', () => {
    const answer = gatewayError(finalAnswer(history({ deployment: 'a', status: 500 }, missing('b', 60_000)), pool, settings));
    assert.deepEqual([answer.status, answer.code], [502, 'BadGateway']);
    const alone = gatewayError(
      finalAnswer(history({ deployment: 'a', status: 404, body: Buffer.from('DeploymentNotFound') }), pool, settings),
    );
    assert.equal(alone.status, 502);
  });

  test('no failure and no refusal: 504', () => {
    const answer = gatewayError(finalAnswer(new AttemptHistory(), pool, settings));
    assert.deepEqual([answer.status, answer.code], [504, 'GatewayTimeout']);
    assert.equal(answer.headers, undefined, 'no retry time is promised');
  });
});

describe('AttemptHistory', () => {
  test('counts throttles, keeps the last failure and the soonest cooldown, and what not to try again', () => {
    const h = new AttemptHistory();
    assert.deepEqual([h.last, h.onlyThrottled, h.soonestCooldownUntil, h.throttles, h.tried], [undefined, true, undefined, 0, []]);
    h.record({ deployment: 'a', status: 429, cooldownUntil: 5000 });
    h.record({ deployment: 'b', status: 429, cooldownUntil: 3000 });
    h.record({ deployment: 'a', status: 429, cooldownUntil: 9000 });
    assert.deepEqual([h.throttles, h.soonestCooldownUntil, h.onlyThrottled, h.last?.cooldownUntil], [3, 3000, true, 9000]);
    h.exclude('b');
    h.record({ deployment: 'b', status: 502 });
    assert.deepEqual([h.throttles, h.onlyThrottled, h.last?.status, h.tried], [3, false, 502, ['b']]);
  });
});
