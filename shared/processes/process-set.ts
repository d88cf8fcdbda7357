/**
 * Child processes of a load run or a test run, and their cleanup on every way out: normal end,
 * failure, SIGINT, SIGTERM. Children are started under `setpriv --pdeathsig SIGKILL` when available,
 * so even a SIGKILLed orchestrator leaves none behind (Linux; setpriv execs, so the pid is the child's own).
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((path) => existsSync(path));

export interface Child {
  name: string;
  process: ChildProcess;
  pid: number;
}

export class ProcessSet {
  private readonly children = new Set<Child>();
  private stopping: Promise<void> | undefined;
  private readonly cleanups: (() => void | Promise<void>)[] = [];
  private cap: NodeJS.Timeout | undefined;

  constructor() {
    const onSignal = (signal: NodeJS.Signals) => {
      process.stderr.write(`\n${signal}: stopping every child process…\n`);
      void this.stopAll().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    // Last resort on any exit path (process.exit, an uncaught error): no child survives.
    process.once('exit', () => {
      for (const child of this.children) if (alive(child.process)) child.process.kill('SIGKILL');
    });
  }

  /** Spawns and tracks a child. */
  spawn(name: string, command: string, args: string[], options: SpawnOptions = {}): Child {
    const [file, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', command, ...args]] : [command, args];
    const proc = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    if (proc.pid === undefined) throw new Error(`could not start ${name} (${command})`);
    return this.adopt(name, proc);
  }

  /** Tracks a child started elsewhere (the forked load generator). */
  adopt(name: string, proc: ChildProcess): Child {
    if (proc.pid === undefined) throw new Error(`${name} has no pid`);
    const child: Child = { name, process: proc, pid: proc.pid };
    this.children.add(child);
    proc.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Bounds the whole run: after `ms`, every child is stopped and the process exits with 2 (stopAll disarms it). */
  capRunTime(ms: number): void {
    clearTimeout(this.cap);
    this.cap = setTimeout(() => {
      process.stderr.write(`\nhard cap of ${Math.round(ms / 1000)} s reached: stopping everything\n`);
      void this.stopAll(2000).finally(() => process.exit(2));
    }, ms);
    this.cap.unref();
  }

  /** Runs at stopAll, after the children are gone (temp dirs…). */
  onCleanup(cleanup: () => void | Promise<void>): void {
    this.cleanups.push(cleanup);
  }

  /** SIGTERM every child (in reverse start order, so clients stop before their servers), SIGKILL after graceMs. */
  stopAll(graceMs = 5000): Promise<void> {
    this.stopping ??= (async () => {
      clearTimeout(this.cap);
      for (const child of [...this.children].reverse()) await stopChild(child.process, graceMs);
      for (const cleanup of this.cleanups.reverse()) {
        try {
          await cleanup();
        } catch {
          // best effort
        }
      }
    })();
    return this.stopping;
  }
}

export function alive(proc: ChildProcess): boolean {
  return proc.exitCode === null && proc.signalCode === null;
}

export async function stopChild(proc: ChildProcess, graceMs = 5000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!alive(proc)) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.kill(signal);
  const timer = setTimeout(() => {
    if (alive(proc)) proc.kill('SIGKILL');
  }, graceMs);
  await exited;
  clearTimeout(timer);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export function commandPath(name: string, candidates: string[] = []): string | undefined {
  for (const candidate of candidates) if (existsSync(candidate)) return candidate;
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const path = found.stdout.trim();
  return found.status === 0 && path ? path : undefined;
}

export async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs: number,
  isDead?: () => string | undefined,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dead = isDead?.();
    if (dead) throw new Error(`${what}: ${dead}`);
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`${what}: not ready after ${timeoutMs} ms`);
    await sleep(100);
  }
}
