/**
 * Assembles one gateway instance: Express routes, client auth, body limits, the dispatcher and the
 * admin and health endpoints. Everything is passed in, so tests run several instances in one process.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { GatewayConfig } from '../shared/config/schema.ts';
import { MemoryStore } from '../shared/store/memory-store.ts';
import type { Store } from '../shared/store/types.ts';
import { ClientAuth, keyMatches, presentedKey, type ClientIdentity } from './auth.ts';
import { Dispatcher } from './dispatcher.ts';
import { errors, sendError } from './errors.ts';
import { estimateTokens } from './estimate.ts';
import { Forwarder } from './forwarder.ts';
import { Health } from './health.ts';
import { LeaseKeeper } from './leases.ts';
import type { Logger } from './logger.ts';
import { Metrics } from './metrics.ts';
import { buildPools, type Pool } from './pools.ts';
import type { Operation } from './request.ts';
import { withUsageRequested } from './usage-stream.ts';
import { admissionWindowMs } from './window.ts';
import { warmUpTokenizers } from '../shared/tokens/index.ts';

export interface GatewayOptions {
  config: GatewayConfig;
  store: Store;
  logger: Logger;
  /** Guards /admin/*; absent → the admin routes answer 404. */
  adminApiKey?: string;
  /** Process-wide default metrics (CPU, memory); off when several instances share a process. */
  defaultMetrics?: boolean;
}

export interface Gateway {
  app: express.Express;
  listen(port: number, host?: string): Promise<{ server: Server; url: string }>;
  close(): Promise<void>;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

type Locals = { requestId: string; client: ClientIdentity };

export function createGateway(options: GatewayOptions): Gateway {
  const { config, store, logger } = options;
  const settings = config.gateway;
  const pools = buildPools(config);
  // Building a tokenizer blocks for a few hundred ms: pay it at start, not on a client's request.
  warmUpTokenizers([...new Set([...pools.values()].map((pool) => pool.encoding))]);
  const metrics = new Metrics(options.defaultMetrics ?? false);
  const auth = new ClientAuth(config.clients);
  const fallbackStore = new MemoryStore({ windowMs: admissionWindowMs(settings.windowMs) });
  const forwarder = new Forwarder();
  const health = new Health(() => store, settings, logger, metrics);
  const leases = new LeaseKeeper(() => store, settings.leaseMs, logger);
  const dispatcher = new Dispatcher({ settings, store, fallbackStore, forwarder, health, leases, metrics, logger });
  if (!auth.enabled) logger.warn('no clients configured: the gateway accepts requests without a key');

  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');

  app.use((req: Request, res: Response, next: NextFunction) => {
    const given = req.headers['x-request-id'];
    const requestId = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    (res.locals as Partial<Locals>).requestId = requestId;
    res.setHeader('x-request-id', requestId);
    next();
  });

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    const storeOk = await store.ping();
    res.status(storeOk ? 200 : 503).json({ status: storeOk ? 'ready' : 'store unavailable', pools: pools.size });
  });
  app.get('/metrics', async (_req, res) => {
    res.setHeader('content-type', metrics.registry.contentType);
    res.end(await metrics.registry.metrics());
  });

  app.get('/admin/pools', async (req, res) => {
    if (!options.adminApiKey) return sendError(res, errors.notFound());
    if (!keyMatches(presentedKey(req.headers), options.adminApiKey)) return sendError(res, errors.unauthorized());
    try {
      const result: Record<string, unknown> = {};
      for (const pool of pools.values()) {
        result[pool.name] = { strategy: pool.config.strategy, deployments: await store.snapshot(pool.layout) };
      }
      res.json({ pools: result });
    } catch (error) {
      logger.warn('admin snapshot failed', { error: (error as Error).message });
      sendError(res, errors.unavailable('The state store is unavailable.'));
    }
  });

  const authenticate = (req: Request, res: Response, next: NextFunction) => {
    const client = auth.identify(req.headers);
    if (!client) return sendError(res, errors.unauthorized());
    (res.locals as Partial<Locals>).client = client;
    next();
  };
  const readBody = express.raw({ type: () => true, limit: settings.maxBodyBytes });

  const proxied = (operation: Operation, poolFromPath: boolean) => async (req: Request, res: Response) => {
    const locals = res.locals as Locals;
    const raw: unknown = req.body;
    if (!Buffer.isBuffer(raw) || raw.length === 0) return sendError(res, errors.badRequest('The request body is empty; send a JSON object.'));
    let json: unknown;
    try {
      json = JSON.parse(raw.toString('utf8'));
    } catch {
      return sendError(res, errors.badRequest('The request body is not valid JSON.'));
    }
    if (!json || typeof json !== 'object' || Array.isArray(json)) return sendError(res, errors.badRequest('The request body must be a JSON object.'));
    const body = json as Record<string, unknown>;
    let poolName: string | undefined;
    if (poolFromPath) poolName = String(req.params.pool);
    else if (typeof body.model === 'string' && body.model) poolName = body.model;
    else return sendError(res, errors.badRequest('The request names no model: set "model" to a pool of this gateway.'));
    const pool: Pool | undefined = pools.get(poolName);
    if (!pool) return sendError(res, errors.unknownPool(poolName));
    const apiVersion = typeof req.query['api-version'] === 'string' ? req.query['api-version'] : undefined;
    await dispatcher.handle(req, res, {
      requestId: locals.requestId,
      client: locals.client,
      pool,
      operation,
      apiVersion,
      body: raw,
      bodyWithUsage: operation === 'embeddings' ? undefined : withUsageRequested(body),
      stream: body.stream === true,
      estimatedTokens: estimateTokens(pool.encoding, pool.config, operation, body),
      startedAt: Date.now(),
    });
  };

  for (const operation of ['chat/completions', 'completions', 'embeddings'] as const) {
    app.post(`/openai/deployments/:pool/${operation}`, authenticate, readBody, proxied(operation, true));
    app.post(`/openai/v1/${operation}`, authenticate, readBody, proxied(operation, false));
    app.post(`/v1/${operation}`, authenticate, readBody, proxied(operation, false));
  }

  app.use((_req: Request, res: Response) => sendError(res, errors.notFound()));
  // Express needs all four parameters to recognise an error handler.
  app.use((error: Error & { type?: string; status?: number }, _req: Request, res: Response, _next: NextFunction) => {
    if (error.type === 'entity.too.large') return sendError(res, errors.tooLarge(settings.maxBodyBytes));
    if (error.type === 'request.aborted') return res.destroy();
    if (error.status && error.status >= 400 && error.status < 500) return sendError(res, errors.badRequest('The request could not be read.'));
    logger.error('unhandled error', { error: error.message });
    sendError(res, errors.internal());
  });

  let server: Server | undefined;
  return {
    app,
    async listen(port: number, host = '127.0.0.1') {
      server = createServer(app);
      // Streams may legitimately stay open for minutes; the gateway's own idle timer guards them.
      server.requestTimeout = 0;
      server.keepAliveTimeout = 65_000;
      await new Promise<void>((resolve, reject) => {
        server?.once('error', reject);
        server?.listen(port, host, () => resolve());
      });
      const address = server.address() as AddressInfo;
      const shownHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
      return { server, url: `http://${shownHost}:${address.port}` };
    },
    async close() {
      leases.close();
      health.close();
      if (server) {
        const closing = new Promise<void>((resolve) => server?.close(() => resolve()));
        server.closeIdleConnections();
        // Give in-flight requests a moment; then cut what is left.
        const cut = setTimeout(() => server?.closeAllConnections(), 5000);
        await closing;
        clearTimeout(cut);
      }
      forwarder.close();
      await fallbackStore.close();
    },
  };
}
