/**
 * What a whole test file shares (a simulator, a cluster, a server), started in a top-level before()
 * and stopped in after().
 *
 * Node runs a file's top-level before() as soon as it is registered, and when no test of the file
 * runs (a --test-name-pattern that matches none of its tests) it runs after() without waiting for it
 * (nodejs/node#52003). after() then finds nothing to stop, and whatever before() starts next keeps
 * the file's process alive: the run hangs. Here after() waits for the start before it stops what
 * the start made.
 */
import { after, before } from 'node:test';

export function sharedByTheFile(start: () => Promise<void>, stop: () => unknown): void {
  let started: Promise<boolean> | undefined;
  before(async () => {
    started = start().then(() => true);
    await started;
  });
  after(async () => {
    // A start that failed has failed before(); there is nothing of it to stop.
    if (await started?.catch(() => false)) await stop();
  });
}
