/**
 * What a whole test file shares (a simulator, a cluster, a server), started in a top-level before()
 * and stopped in after().
 *
 * Node runs a file's top-level before() as soon as it is registered, and when no test of the file
 * runs (a --test-name-pattern that matches none of its tests) it runs after() without waiting for it
 * (nodejs/node#52003). after() then finds nothing to stop, and whatever before() starts next keeps
 * the file's process alive: the run hangs. Here after() waits for the start to settle, then stops
 * what it made, all of it even when one part failed to start: `stop` must take parts that are missing.
 */
import { after, before } from 'node:test';

export function sharedByTheFile(start: () => Promise<void>, stop: () => unknown): void {
  let started: Promise<void> | undefined;
  before(async () => {
    started = start();
    await started;
  });
  after(async () => {
    if (!started) return;
    // A start that failed has failed before() already; what it did start is stopped all the same.
    await started.catch(() => undefined);
    await stop();
  });
}
