/**
 * The routes that are not proxied, on Express: liveness, readiness, metrics, the admin API, and the
 * Azure-shaped 404 and error answers for everything else.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import { errors, sendError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { Pool } from '../pools.ts';
import type { LiveStore } from '../routing/live-store.ts';
import { keyMatches, presentedKey, type ClientAuth } from './auth.ts';
import { assignRequestId } from './request-id.ts';

export interface OpsDeps {
  pools: ReadonlyMap<string, Pool>;
  stores: LiveStore;
  metrics: Metrics;
  logger: Logger;
  auth: ClientAuth;
  /** Guards /admin/*; absent → the admin routes answer 404. */
  adminApiKey: string | undefined;
}

export function createOpsApp(deps: OpsDeps): express.Express {
  const { pools, stores, metrics, logger, auth, adminApiKey } = deps;
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
    const storeOk = await stores.ping();
    res.status(storeOk ? 200 : 503).json({ status: storeOk ? 'ready' : 'store unavailable', pools: pools.size });
  });
  app.get('/metrics', async (_req, res) => {
    res.setHeader('content-type', metrics.registry.contentType);
    res.end(await metrics.registry.metrics());
  });

  // The pools as OpenAI's model list: chat front-ends and SDK tools call it first to offer a choice.
  app.get(['/openai/v1/models', '/v1/models'], (req, res) => {
    if (!auth.identify(req.headers)) return sendError(res, errors.unauthorized());
    res.json({ object: 'list', data: [...pools.keys()].map((id) => ({ id, object: 'model', created: 0, owned_by: 'spillway' })) });
  });

  app.get('/admin/pools', async (req, res) => {
    if (!adminApiKey) return sendError(res, errors.notFound());
    if (!keyMatches(presentedKey(req.headers), adminApiKey)) return sendError(res, errors.unauthorized());
    try {
      const result: Record<string, unknown> = {};
      for (const pool of pools.values()) {
        result[pool.name] = { strategy: pool.config.strategy, deployments: await stores.snapshot(pool.layout) };
      }
      res.json({ pools: result });
    } catch (error) {
      logger.warn('admin snapshot failed', { error: (error as Error).message });
      sendError(res, errors.unavailable('The state store is unavailable.'));
    }
  });

  app.use((_req: Request, res: Response) => sendError(res, errors.notFound()));
  // Express needs all four parameters to recognise an error handler.
  app.use((error: Error & { status?: number }, _req: Request, res: Response, _next: NextFunction) => {
    if (error.status && error.status >= 400 && error.status < 500)
      return sendError(res, errors.badRequest('The request could not be read.'));
    logger.error('unhandled error', { error: error.message });
    sendError(res, errors.internal());
  });
  return app;
}
