/**
 * Entry point: `npm start`. Reads the environment, loads the config (or starts the built-in demo),
 * connects the store and serves until SIGTERM/SIGINT, then shuts down gracefully (app.ts `shutdown`;
 * a second signal exits at once). SIGHUP re-reads GATEWAY_CONFIG (live-config.ts).
 */
import { constants } from 'node:os';
import { loadConfigFile, ConfigError } from '../shared/config/load.ts';
import type { GatewayConfig } from '../shared/config/schema.ts';
import { createStore, describeRedisTarget, storeKind } from '../shared/store/index.ts';
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
  const store = createStore({ redis: env.redis, windowMs: admissionWindowMs(config.gateway.windowMs) });
  if (!env.redis) logger.warn('no REDIS_URL or REDIS_CLUSTER_NODES: in-memory store, so run a single instance');
  const file = env.GATEWAY_CONFIG;
  const gateway = createGateway({
    config,
    store,
    logger,
    adminApiKey: env.ADMIN_API_KEY,
    defaultMetrics: true,
    loadConfig: file ? () => loadConfigFile(file) : undefined,
    // The Batch API and its lane need Redis; without it their routes answer 503.
    redis: env.redis,
  });
  // The signals are handled before the listener opens: one that comes as it starts shuts it down too.
  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn('second signal: exiting at once', { signal });
      process.exit(128 + constants.signals[signal]);
    }
    stopping = true;
    // Bounded whatever hangs (a store that does not answer its quit): the grace, then STOP_MARGIN_MS.
    const capMs = gateway.settings.shutdownGraceMs + STOP_MARGIN_MS;
    const cap = setTimeout(() => {
      logger.error('shutdown did not finish in time: exiting', { signal, afterMs: capMs });
      process.exit(1);
    }, capMs);
    cap.unref();
    await gateway.shutdown(signal);
    await store.close();
    await demo?.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  // Without a handler SIGHUP would end the process; here it reloads the config (a no-op for the demo).
  process.on('SIGHUP', () => {
    try {
      gateway.reload({ trigger: 'SIGHUP' });
    } catch (error) {
      logger.error('config reload failed: the old config keeps serving', { error: String((error as Error)?.stack ?? error) });
    }
  });

  const { url } = await gateway.listen(env.PORT, env.listenHost);
  logger.info('gateway listening', {
    url,
    host: env.listenHost,
    pools: Object.keys(config.pools),
    store: storeKind(env.redis),
    ...(env.redis ? { redis: describeRedisTarget(env.redis) } : {}),
    config: env.GATEWAY_CONFIG ?? 'built-in demo',
  });
  if (demo) process.stdout.write(demo.banner(url, env.listenHost));
}

/** What the shutdown may take past its grace (releasing leases, closing the store) before the process exits anyway. */
const STOP_MARGIN_MS = 5000;

main().catch((error: unknown) => {
  // A bad config or environment is the operator's to fix: say what, without a stack trace.
  const message =
    error instanceof ConfigError || (error instanceof Error && error.message.startsWith('invalid environment'))
      ? error.message
      : String((error as Error)?.stack ?? error);
  process.stderr.write(`spillway: ${message}\n`);
  process.exit(1);
});
