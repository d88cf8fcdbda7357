/**
 * Child processes of a load run, and their cleanup on every way out: normal end, failure, SIGINT,
 * SIGTERM. Children are started under `setpriv --pdeathsig SIGKILL` when available, so even a
 * SIGKILLed orchestrator leaves none behind (Linux; setpriv execs, so the pid is the child's own).
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
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

const CLOCK_TICKS_PER_SECOND = (() => {
  const result = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const ticks = Number(result.stdout.trim());
  return Number.isFinite(ticks) && ticks > 0 ? ticks : 100;
})();

/** CPU time (user + system) a process used so far, in ms, from /proc/<pid>/stat; 0 when it is gone. */
export function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces; fields after the closing parenthesis are fixed.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return ((utime + stime) * 1000) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

/** CPU time (user + system) a group of processes used so far, summed, in ms. */
export function cpuMsOf(pids: number[]): number {
  return pids.reduce((acc, pid) => acc + cpuMs(pid), 0);
}

/** Resident and peak resident memory of a process, MB, from /proc/<pid>/status. */
export function memoryMb(pid: number): { rss: number; peak: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
    return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
  } catch {
    return { rss: 0, peak: 0 };
  }
}

/** Direct children of a process (nginx's workers). */
export function childPids(pid: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
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

/** CPU time every process on the machine used so far (user, nice, system, irq, softirq, steal), in ms, from /proc/stat. */
export function machineBusyMs(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
    return (((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) * 1000) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}
