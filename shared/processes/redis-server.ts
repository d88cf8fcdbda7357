/**
 * A private redis-server on a free loopback port, without persistence: the load tools' stack
 * (loadtest/lib/stack.ts startRedis) and the test suite (test/helpers/redis-server.ts) start it the same way.
 */
import type { ChildProcess } from 'node:child_process';
import { freePort, stopChild } from './process-set.ts';

/** Tries this many free ports: one can be taken between freePort() and redis-server's listen. */
const ATTEMPTS = 5;
/** redis-server prints "Ready to accept connections" well within this. */
const READY_TIMEOUT_MS = 5000;

/**
 * Starts `binary` with its data in `dataDir`. `spawnRedis` starts the process with the given
 * arguments, stdout piped (tracked by a ProcessSet, or plainly); a child that does not get ready
 * is killed and another port tried.
 */
export async function launchRedis<C extends { process: ChildProcess }>(
  binary: string,
  dataDir: string,
  spawnRedis: (args: string[]) => C,
  /** A given port (a restart where the clients expect it); tried once. */
  fixedPort?: number,
): Promise<{ url: string; port: number; child: C }> {
  for (let attempt = 0; attempt < (fixedPort ? 1 : ATTEMPTS); attempt++) {
    const port = fixedPort ?? (await freePort());
    const child = spawnRedis([
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dataDir,
      '--protected-mode',
      'yes',
    ]);
    if (await ready(child.process)) {
      child.process.stdout?.resume();
      child.process.stderr?.resume();
      return { url: `redis://127.0.0.1:${port}`, port, child };
    }
    await stopChild(child.process, 1000, 'SIGKILL');
  }
  throw new Error(
    fixedPort ? `redis-server did not start on port ${fixedPort}` : `redis-server did not start on a free port after ${ATTEMPTS} tries`,
  );
}

/** True once the server says it accepts connections; false when it exits or stays silent too long. */
function ready(proc: ChildProcess): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    let out = '';
    const settle = (isReady: boolean) => {
      clearTimeout(timer);
      proc.stdout?.off('data', onData);
      proc.off('exit', onExit);
      resolve(isReady);
    };
    const onData = (chunk: Buffer) => {
      // The tail is enough to find the banner, also when it straddles two chunks.
      out = (out + chunk.toString()).slice(-256);
      if (out.includes('Ready to accept connections')) settle(true);
    };
    const onExit = () => settle(false);
    const timer = setTimeout(() => settle(false), READY_TIMEOUT_MS);
    proc.stdout?.on('data', onData);
    proc.once('exit', onExit);
  });
}
