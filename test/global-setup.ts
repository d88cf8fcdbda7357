/**
 * node --test global setup: one private redis-server for the whole run (unless REDIS_URL is given),
 * exported to every test file through REDIS_URL. Test files isolate themselves by key prefix.
 */
import { startRedisServer, type RedisServer } from './helpers/redis-server.ts';

let server: RedisServer | undefined;

export async function globalSetup(): Promise<void> {
  if (process.env.REDIS_URL) return;
  server = await startRedisServer();
  process.env.REDIS_URL = server.url;
  process.env.SPILLWAY_TEST_REDIS_PRIVATE = '1';
}

export async function globalTeardown(): Promise<void> {
  await server?.stop();
}
