/**
 * Assembles one gateway instance from its stages: http/ (listener, auth, body, ops routes),
 * routing/ (the attempt loop and its collaborators) and upstream/ (the attempt itself). Everything is
 * passed in, so tests run several instances in one process. docs/architecture.md walks the stages.
 */
import type { Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type express from 'express';
import type { GatewayConfig, GatewaySettings } from '../shared/config/schema.ts';
import type { RedisTarget } from '../shared/store/redis-target.ts';
import type { Store } from '../shared/store/types.ts';
import { createBackground, type Background } from './background/assemble.ts';
import { registerDeploymentGauges } from './deployment-gauges.ts';
import { errors, sendError } from './errors.ts';
import { LaneMarker } from './http/auth.ts';
import { Listener } from './http/listener.ts';
import { createOpsApp } from './http/ops-routes.ts';
import { prepareRequest } from './http/prepare-request.ts';
import { logRefusal } from './http/refusal-log.ts';
import { assignRequestId } from './http/request-id.ts';
import type { Logger } from './logger.ts';
import { allDeployments, LiveConfig, reloadConfig, type ReloadOutcome, type ReloadTrigger } from './live-config.ts';
import { Metrics } from './metrics.ts';
import { createRouting } from './routing/assemble.ts';
import { UpstreamCredentials, type CredentialFactory } from './upstream/credentials.ts';

/** What close() gives the requests in flight (tests; SIGTERM's shutdown has its own grace). */
const CLOSE_GRACE_MS = 5000;

export interface GatewayOptions {
  config: GatewayConfig;
  store: Store;
  logger: Logger;
  /** Guards /admin/*; absent → the admin routes answer 404. */
  adminApiKey?: string;
  /** Process-wide default metrics (CPU, memory); off when several instances share a process. */
  defaultMetrics?: boolean;
  /** Makes the Entra ID credentials (tests); @azure/identity's when absent. */
  credentialFactory?: CredentialFactory;
  /** Reads the config again for a reload (throws ConfigError when invalid); absent → nothing to reload. */
  loadConfig?: () => GatewayConfig;
  /** The Redis (or Redis Cluster) of the Batch API and its lane (BullMQ); absent → no lane, and the Batch routes answer 503. */
  redis?: RedisTarget | undefined;
  /** Prefix of the Batch API's and the lane's keys (tests that share one Redis); the store's default otherwise. */
  backgroundPrefix?: string;
  /** The lane's mark (tests that send marked requests themselves); a fresh random secret when absent. */
  laneMarker?: LaneMarker;
}

/** How a shutdown went. */
export interface ShutdownReport {
  /** Requests still running when the grace ended, cut then. */
  cut: number;
  durationMs: number;
}

export interface Gateway {
  app: express.Express;
  listen(port: number, host?: string): Promise<{ server: Server; url: string }>;
  /** Stops at once: in-flight requests get 5 s (tests); SIGTERM's way is `shutdown`. */
  close(): Promise<void>;
  /** The gateway settings in force (a reload changes the live ones). */
  readonly settings: GatewaySettings;
  /** Re-reads the config and swaps it in when valid (SIGHUP, POST /admin/reload); never throws for a bad file. */
  reload(trigger: ReloadTrigger): ReloadOutcome;
  /**
   * Graceful shutdown: /readyz answers 503 at once; after shutdownDelayMs the listener refuses new
   * connections; in-flight requests and streams finish until shutdownGraceMs from the call, those
   * still running then are cut; every lease is released and routing stopped. The shared store is the
   * caller's to close. Called again, the same shutdown.
   */
  shutdown(reason: string): Promise<ShutdownReport>;
}

export function createGateway(options: GatewayOptions): Gateway {
  const { logger } = options;
  // The one holder of the config in force; a reload swaps its snapshot (live-config.ts).
  const live = new LiveConfig(options.config);
  const { settings } = live;
  const metrics = new Metrics(options.defaultMetrics ?? false);
  if (!live.current.auth.enabled) logger.warn('no clients configured: the gateway accepts requests without a key');

  // Token sources only for the identities `auth: entra` deployments use; none, and @azure/identity is never loaded.
  const credentials = new UpstreamCredentials(live.deployments(), logger, { factory: options.credentialFactory });
  const routing = createRouting(options.store, settings, metrics, logger, credentials, live);
  const { dispatcher, stores, close: closeRouting } = routing;
  // Each deployment against its budget, from the store at every scrape, over the pools in force then.
  registerDeploymentGauges({ registry: metrics.registry, pools: () => live.current.pools.values(), store: stores });
  live.onSwap((next) => {
    const deployments = allDeployments(next.pools);
    credentials.update(deployments);
    routing.health.forget(deployments);
  });
  const reload = (trigger: ReloadTrigger) => reloadConfig(live, options.loadConfig, logger, trigger);

  // The Batch API and its lane (Redis only). Lines are requests to this listener marked by this process's secret.
  const marker = options.laneMarker ?? new LaneMarker();
  const background: Background | undefined = options.redis
    ? createBackground({
        redis: options.redis,
        prefix: options.backgroundPrefix,
        config: live,
        settings,
        stores,
        credentials,
        laneHeaders: (client) => marker.headers(client),
        metrics,
        logger,
      })
    : undefined;
  // A reload may add pools: their lines get workers too.
  const syncLane = () =>
    background?.syncPools().catch((error: Error) => logger.warn('background lane: no workers for new pools', { error: error.message }));
  live.onSwap(() => void syncLane());

  let shuttingDown = false;
  const app = createOpsApp({
    config: live,
    stores,
    metrics,
    logger,
    adminApiKey: options.adminApiKey,
    credentials,
    shuttingDown: () => shuttingDown,
    reload,
    background: background && (() => background.status()),
    batches: background && {
      records: background.records,
      lane: background.lane,
      config: live,
      settings: live.current.config.background,
      logger,
      metrics,
    },
  });
  const listener = new Listener(
    async (req, res, route) => {
      const requestId = assignRequestId(req, res);
      const request =
        route === 'bad-path'
          ? void sendError(res, errors.badRequest('The request path could not be decoded.'))
          : // The config in force now: the request keeps this snapshot (its pool, its client) to its end.
            await prepareRequest(req, res, route, requestId, live.current, marker);
      // Returned, not awaited: this frame would otherwise stay suspended for as long as a stream flows.
      if (request) return dispatcher.handle(req, res, request);
      logRefusal(req, res, requestId, logger, metrics);
    },
    (req, res) => void app(req, res),
    logger,
    { settings, metrics },
  );

  let stopped: Promise<number> | undefined;
  const stop = (graceMs: number) =>
    (stopped ??= (async () => {
      // The lane first (it stops taking lines at once; lines running are requests through this
      // listener and end within the same grace, or go back to their queue), then the listener.
      const laneClosed = background?.close(graceMs);
      const { cut } = await listener.stop(graceMs);
      await laneClosed;
      await closeRouting();
      credentials.close();
      return cut;
    })());
  let stopping: Promise<ShutdownReport> | undefined;
  const shutdown = async (reason: string): Promise<ShutdownReport> => {
    const startedAt = Date.now();
    const { shutdownDelayMs, shutdownGraceMs } = settings;
    shuttingDown = true;
    listener.drain();
    // The lane takes no new line from now on; those running have the grace (stop() waits for them).
    void background?.close(shutdownGraceMs);
    logger.warn('shutting down: /readyz answers 503; new connections are refused after the delay', {
      reason,
      shutdownDelayMs,
      shutdownGraceMs,
      inFlight: listener.inFlight,
    });
    await sleep(shutdownDelayMs);
    const graceLeftMs = Math.max(0, startedAt + shutdownGraceMs - Date.now());
    logger.info('shutting down: new connections refused; waiting for the requests in flight', { inFlight: listener.inFlight, graceLeftMs });
    const cut = await stop(graceLeftMs);
    if (cut > 0) logger.warn('shutdown grace over: requests still in flight were cut', { cut, shutdownGraceMs });
    const report = { cut, durationMs: Date.now() - startedAt };
    logger.info('shutdown complete: every request ended and its lease released', report);
    return report;
  };

  return {
    app,
    settings,
    async listen(port: number, host = '127.0.0.1') {
      const listening = await listener.listen(port, host);
      // The lane's lines go to the address the listener bound (its loopback form: listener.ts). Not
      // awaited: a Redis that is away must not keep the gateway from serving (the workers start when it answers).
      background?.start(listening.url).catch((error: Error) => logger.error('background lane did not start', { error: error.message }));
      return listening;
    },
    async close() {
      shuttingDown = true;
      await stop(CLOSE_GRACE_MS);
    },
    reload,
    shutdown(reason: string) {
      stopping ??= shutdown(reason);
      return stopping;
    },
  };
}
