/**
 * Starts a private redis-server on a free loopback port for the test run, so tests never touch a
 * Redis that happens to run on this machine's standard port. The start itself is shared with the
 * load tools (shared/processes/redis-server.ts); this adds the tests' own temp dir and stop().
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { commandPath, freePort, stopChild } from '../../shared/processes/process-set.ts';
import { launchRedis } from '../../shared/processes/redis-server.ts';

export { freePort };

export interface RedisServer {
  url: string;
  port: number;
  process: ChildProcess;
  stop(): Promise<void>;
}

export function redisServerBinary(): string | undefined {
  return commandPath('redis-server');
}

/** A private redis-server; with `port`, on that port (to restart one where its clients reconnect). */
export async function startRedisServer(binary = redisServerBinary(), fixedPort?: number): Promise<RedisServer> {
  if (!binary) {
    throw new Error(
      'redis-server is not installed and REDIS_URL is not set. Install it (Debian/Ubuntu: `apt-get install -y redis-server`, ' +
        'macOS: `brew install redis`) or point REDIS_URL at a Redis the tests may flush.',
    );
  }
  const dir = mkdtempSync(join(tmpdir(), 'spillway-redis-'));
  try {
    const { url, port, child } = await launchRedis(
      binary,
      dir,
      (args) => ({
        process: spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] }),
      }),
      fixedPort,
    );
    return {
      url,
      port,
      process: child.process,
      async stop() {
        // Idempotent: tests stop a server to see the store fail, and again in their clean-up.
        await stopChild(child.process);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/** How many reads from its clients a Redis has processed since it started (INFO stats): one per write that reached it whole. */
export async function readsProcessed(connection: Redis): Promise<number> {
  const reads = /total_reads_processed:(\d+)/.exec(await connection.info('stats'))?.[1];
  if (reads === undefined) throw new Error('INFO stats has no total_reads_processed');
  return Number(reads);
}
