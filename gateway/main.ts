/**
 * Entry point: `npm start`. Reads the environment, loads the config (or starts the built-in demo),
 * connects the store and serves until SIGTERM/SIGINT, then drains.
 */
import { loadConfigFile, ConfigError } from '../shared/config/load.ts';
import type { GatewayConfig } from '../shared/config/schema.ts';
import { createStore } from '../shared/store/index.ts';
import { createGateway } from './app.ts';
import { startDemo, type Demo } from './demo.ts';
import { readEnv } from './env.ts';
import { admissionWindowMs } from './routing/window.ts';
import { createLogger } from './logger.ts';

async function main(): Promise<void> {
  const env = readEnv();
  const logger = createLogger(env.LOG_LEVEL);
  let config: GatewayConfig;
  let demo: Demo | undefined;
  if (env.GATEWAY_CONFIG) {
    config = loadConfigFile(env.GATEWAY_CONFIG);
  } else {
    demo = await startDemo();
    config = demo.config;
  }
  const store = createStore({ redisUrl: env.REDIS_URL, windowMs: admissionWindowMs(config.gateway.windowMs) });
  if (!env.REDIS_URL) logger.warn('no REDIS_URL: in-memory store, so run a single instance');
  const gateway = createGateway({ config, store, logger, adminApiKey: env.ADMIN_API_KEY, defaultMetrics: true });
  const { url } = await gateway.listen(env.PORT, env.HOST);
  logger.info('gateway listening', {
    url,
    pools: Object.keys(config.pools),
    store: env.REDIS_URL ? 'redis' : 'memory',
    config: env.GATEWAY_CONFIG ?? 'built-in demo',
  });
  if (demo) process.stdout.write(demo.banner(url));

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info('shutting down', { signal });
    await gateway.close();
    await store.close();
    await demo?.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((error: unknown) => {
  // A bad config or environment is the operator's to fix: say what, without a stack trace.
  const message =
    error instanceof ConfigError || (error instanceof Error && error.message.startsWith('invalid environment'))
      ? error.message
      : String((error as Error)?.stack ?? error);
  process.stderr.write(`spillway: ${message}\n`);
  process.exit(1);
});
