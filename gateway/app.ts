/**
 * Assembles one gateway instance: Express routes, client auth, body limits, the dispatcher and the
 * admin and health endpoints. Everything is passed in, so tests run several instances in one process.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { GatewayConfig } from '../shared/config/schema.ts';
import { MemoryStore } from '../shared/store/memory-store.ts';
import type { Store } from '../shared/store/types.ts';
import { ClientAuth, keyMatches, presentedKey } from './auth.ts';
import { Dispatcher } from './dispatcher.ts';
import { errors, sendError } from './errors.ts';
import { estimateTokens } from './estimate.ts';
import { Forwarder } from './forwarder.ts';
import { Health } from './health.ts';
import { LeaseKeeper } from './leases.ts';
import type { Logger } from './logger.ts';
import { Metrics } from './metrics.ts';
import { buildPools, type Pool } from './pools.ts';
import { apiVersionOf, matchProxiedRoute, type ProxiedRoute } from './proxied-route.ts';
import { BodyError, readRequestBody } from './request-body.ts';
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

/** The client's x-request-id when it is a sane token, else a new one; echoed on the response. */
function assignRequestId(req: IncomingMessage, res: ServerResponse): string {
  const given = req.headers['x-request-id'];
  const requestId = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
  res.setHeader('x-request-id', requestId);
  return requestId;
}

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
    assignRequestId(req, res);
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

  /**
   * The proxied routes, served without the Express router and body parser: on this path every
   * microsecond is added to every request (leaving them, with two smaller changes, cut the CPU per
   * request by about a fifth: docs/benchmarks.md). Express keeps the health, metrics and admin routes.
   */
  const handleProxied = async (req: IncomingMessage, res: ServerResponse, route: ProxiedRoute | 'bad-path'): Promise<void> => {
    const requestId = assignRequestId(req, res);
    if (route === 'bad-path') return sendError(res, errors.badRequest('The request path could not be decoded.'));
    const client = auth.identify(req.headers);
    if (!client) return sendError(res, errors.unauthorized());
    let raw: Buffer;
    try {
      raw = await readRequestBody(req, settings.maxBodyBytes, settings.bodyTimeoutMs);
    } catch (error) {
      return refuseBody(res, error);
    }
    if (raw.length === 0) return sendError(res, errors.badRequest('The request body is empty; send a JSON object.'));
    let json: unknown;
    try {
      json = JSON.parse(raw.toString('utf8'));
    } catch {
      return sendError(res, errors.badRequest('The request body is not valid JSON.'));
    }
    if (!json || typeof json !== 'object' || Array.isArray(json))
      return sendError(res, errors.badRequest('The request body must be a JSON object.'));
    const body = json as Record<string, unknown>;
    let poolName: string;
    if (route.pool !== undefined) poolName = route.pool;
    else if (typeof body.model === 'string' && body.model) poolName = body.model;
    else return sendError(res, errors.badRequest('The request names no model: set "model" to a pool of this gateway.'));
    const pool: Pool | undefined = pools.get(poolName);
    if (!pool) return sendError(res, errors.unknownPool(poolName));
    const { operation } = route;
    await dispatcher.handle(req, res, {
      requestId,
      client,
      pool,
      operation,
      apiVersion: apiVersionOf(route.query),
      body: raw,
      bodyWithUsage: operation === 'embeddings' ? undefined : withUsageRequested(body),
      stream: body.stream === true,
      estimatedTokens: estimateTokens(pool.encoding, pool.config, operation, body),
      startedAt: Date.now(),
    });
  };

  const refuseBody = (res: ServerResponse, error: unknown): void => {
    const failure = error instanceof BodyError ? error.failure : 'aborted';
    if (failure === 'aborted') return void res.destroy();
    if (failure === 'too-large' || failure === 'too-slow') {
      // The rest of the body is not read: the connection cannot carry another request after it.
      res.setHeader('connection', 'close');
      return sendError(res, failure === 'too-large' ? errors.tooLarge(settings.maxBodyBytes) : errors.bodyTimeout(settings.bodyTimeoutMs));
    }
    if (failure === 'unsupported-encoding') return sendError(res, errors.unsupportedEncoding());
    sendError(res, errors.badRequest('The request body could not be decoded.'));
  };

  const handleRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const route = matchProxiedRoute(req.method, req.url);
    if (!route) return void app(req, res);
    handleProxied(req, res, route).catch((error: Error) => {
      logger.error('unhandled error', { error: error.message });
      sendError(res, errors.internal());
    });
  };

  app.use((_req: Request, res: Response) => sendError(res, errors.notFound()));
  // Express needs all four parameters to recognise an error handler.
  app.use((error: Error & { status?: number }, _req: Request, res: Response, _next: NextFunction) => {
    if (error.status && error.status >= 400 && error.status < 500)
      return sendError(res, errors.badRequest('The request could not be read.'));
    logger.error('unhandled error', { error: error.message });
    sendError(res, errors.internal());
  });

  let server: Server | undefined;
  return {
    app,
    async listen(port: number, host = '127.0.0.1') {
      server = createServer(handleRequest);
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
