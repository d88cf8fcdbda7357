/**
 * RequestContext.answerPiping / atEnd: the attempt loop's `finally` steps, queued while an answer is
 * piped, run in their order once it is over, as nested `finally` blocks would: every one of them,
 * whatever the answer or an earlier step came to, the last failure passed on.
 */
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { describe, test } from 'node:test';
import type { ProxiedRequest } from '../../../gateway/routing/proxied-request.ts';
import { RequestContext } from '../../../gateway/routing/request-context.ts';

/** The queue needs neither the request nor the response. */
const context = () => new RequestContext({} as ProxiedRequest, {} as ServerResponse, new Set());

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((ok, fail) => ((resolve = ok), (reject = fail)));
  return { promise, resolve, reject };
}

describe('RequestContext: steps at the end of a piped answer', () => {
  test('with no answer piped a step runs at once and its result is there to await', async () => {
    const ctx = context();
    const ran: string[] = [];
    assert.equal(await ctx.atEnd(() => (ran.push('now'), Promise.resolve('result'))), 'result');
    assert.deepEqual(ran, ['now']);
    assert.equal(ctx.answered, undefined);
  });

  test('while an answer is piped the steps wait; once it is over they run after served, in order', async () => {
    const ctx = context();
    const piping = deferred<string>();
    const ran: string[] = [];
    ctx.answerPiping(piping.promise, async (piped) => void ran.push(`served ${piped}`));
    for (const step of ['attempt', 'lease', 'queue'])
      assert.equal(
        ctx.atEnd(() => void ran.push(step)),
        undefined,
      );
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(ran, [], 'nothing ran while the answer flows');
    piping.resolve('ok');
    await ctx.answered;
    assert.deepEqual(ran, ['served ok', 'attempt', 'lease', 'queue']);
  });

  test('a pipe that fails and a step that throws: every step still runs, the last failure goes on', async () => {
    const ctx = context();
    const piping = deferred<string>();
    const ran: string[] = [];
    ctx.answerPiping(piping.promise, async () => void ran.push('served'));
    ctx.atEnd(() => {
      ran.push('first');
      throw new Error('first step failed');
    });
    ctx.atEnd(() => void ran.push('second'));
    piping.reject(new Error('the pipe failed'));
    await assert.rejects(ctx.answered!, /first step failed/);
    assert.deepEqual(ran, ['first', 'second'], 'served is not run for a failed pipe; the steps are');
  });
});
