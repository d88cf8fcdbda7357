/**
 * Real parts for the unit tests of the gateway's collaborators (test/gateway/http, test/gateway/routing):
 * a pool and settings from a validated config (defaults from the schema), loggers, and Redis stores with
 * a key prefix of their own, or one that cannot reach any Redis.
 */
import { Writable } from 'node:stream';
import winston from 'winston';
import type { GatewaySettings } from '../../shared/config/schema.ts';
import { freePort } from '../../shared/processes/process-set.ts';
import { RedisStore } from '../../shared/store/redis-store.ts';
import { createLogger, type Logger } from '../../gateway/logger.ts';
import { buildPools, type Deployment, type Pool } from '../../gateway/pools.ts';
import { testConfig, type DeploymentInput } from './gateway.ts';
import { uniquePool } from './fixtures.ts';
import { uniquePrefix } from './store-suite.ts';

/** Nothing routed in these tests reaches an endpoint: a closed port. */
export const NOWHERE = 'http://127.0.0.1:9';

export interface PoolSetup {
  pool: Pool;
  settings: GatewaySettings;
  /** The pool's deployment by id (throws on an unknown id, so a typo fails loudly). */
  deployment(id: string): Deployment;
}

/** One pool of a validated config (every unset field at its schema default), under a name no other test uses. */
export function poolSetup(
  deployments: Array<Partial<DeploymentInput> & { id: string }>,
  options: { pool?: Record<string, unknown>; gateway?: Record<string, unknown> } = {},
): PoolSetup {
  const name = uniquePool();
  const config = testConfig({
    pools: { [name]: { ...options.pool, deployments: deployments.map((d) => ({ endpoint: NOWHERE, ...d })) } },
    gateway: options.gateway,
  });
  const pool = buildPools(config).get(name)!;
  return {
    pool,
    settings: config.gateway,
    deployment(id) {
      const found = pool.deployments.get(id);
      if (!found) throw new Error(`no deployment ${id} in ${name}`);
      return found;
    },
  };
}

export function quietLogger(): Logger {
  return createLogger('error', true);
}

export interface LogLine {
  level: string;
  message: string;
  [field: string]: unknown;
}

/** A winston logger that keeps every line (debug and up) in `lines`, to assert what was logged. */
export function memoryLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as LogLine);
      done();
    },
  });
  const logger = winston.createLogger({
    level: 'debug',
    format: winston.format.json(),
    transports: [new winston.transports.Stream({ stream: sink })],
  });
  return { logger, lines };
}

/** A RedisStore on the test run's Redis (REDIS_URL, set by test/global-setup.ts) with a fresh key prefix. */
export function redisStore(windowMs?: number): RedisStore {
  const url = process.env.REDIS_URL;
  if (!url) throw new Error('REDIS_URL is not set: run with --test-global-setup=test/global-setup.ts');
  return new RedisStore(url, { keyPrefix: uniquePrefix(), ...(windowMs ? { windowMs } : {}) });
}

/** A RedisStore pointed at a port nothing listens on: every call rejects (in well under a second). */
export async function unreachableStore(): Promise<RedisStore> {
  return new RedisStore(`redis://127.0.0.1:${await freePort()}`, { keyPrefix: uniquePrefix() });
}
