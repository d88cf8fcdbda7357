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
import type { UpstreamCredentials } from '../upstream/credentials.ts';
import { createAdminRouter, type AdminDeps } from './admin-routes.ts';
import type { ClientAuth } from './auth.ts';
import { createBatchRouter, unavailableBatchRouter, type BatchApiDeps } from './batch-routes.ts';
import { logRefusal } from './refusal-log.ts';
import { assignRequestId } from './request-id.ts';

export interface OpsDeps {
  /** The config in force: its pools and clients, read per request (a reload swaps them). */
  config: { readonly current: { readonly pools: ReadonlyMap<string, Pool>; readonly auth: ClientAuth } };
  stores: LiveStore;
  metrics: Metrics;
  logger: Logger;
  /** Guards /admin/*; absent → the admin routes answer 404. */
  adminApiKey: string | undefined;
  /** The deployments' Entra ID tokens: /readyz is 503 while one has none. */
  credentials?: UpstreamCredentials;
  /** True once the instance is shutting down: /readyz answers 503 `shutting down`. */
  shuttingDown?: () => boolean;
  /** The lane's and the prober's state for /admin/pools (admin-routes.ts); absent → not shown. */
  background?: AdminDeps['background'];
  /** POST /admin/reload (admin-routes.ts); absent → 404. */
  reload?: AdminDeps['reload'];
  /** The Batch API (batch-routes.ts: files, batches); absent (no Redis) → its routes answer 503. */
  batches?: BatchApiDeps;
}

export function createOpsApp(deps: OpsDeps): express.Express {
  const { config, stores, metrics, logger, adminApiKey } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');

  app.use((req: Request, res: Response, next: NextFunction) => {
    const requestId = assignRequestId(req, res);
    // A client's mistake (unknown route, bad key) is logged like a refused proxied request; a 503 of /readyz is not one.
    res.once('finish', () => {
      if (res.statusCode >= 400 && res.statusCode < 500) logRefusal(req, res, requestId, logger, metrics);
    });
    next();
  });

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    const { pools } = config.current;
    // Shutting down: the load balancer is to stop sending here, whatever else holds.
    if (deps.shuttingDown?.()) return void res.status(503).json({ status: 'shutting down', pools: pools.size });
    const storeOk = await stores.ping();
    // An `auth: entra` deployment without a usable token (not fetched yet, or none to be had): not ready.
    const tokenless = deps.credentials?.missing() ?? [];
    const status = !storeOk ? 'store unavailable' : tokenless.length > 0 ? 'Entra ID token unavailable' : 'ready';
    res.status(status === 'ready' ? 200 : 503).json({ status, pools: pools.size, ...(tokenless.length > 0 ? { tokenless } : {}) });
  });
  app.get('/metrics', async (_req, res) => {
    res.setHeader('content-type', metrics.registry.contentType);
    res.end(await metrics.registry.metrics());
  });

  // The pools as OpenAI's model list: chat front-ends and SDK tools call it first to offer a choice.
  app.get(['/openai/v1/models', '/v1/models'], (req, res) => {
    const { pools, auth } = config.current;
    if (!auth.identify(req.headers)) return sendError(res, errors.unauthorized());
    res.json({ object: 'list', data: [...pools.keys()].map((id) => ({ id, object: 'model', created: 0, owned_by: 'spillway' })) });
  });

  // /openai/v1/files…, /openai/v1/batches… (and /v1/…, /openai/…): the Batch API, or its 503 without Redis.
  app.use(deps.batches ? createBatchRouter(deps.batches) : unavailableBatchRouter(config));

  // /admin/*: the pools' state, drain / enable / reset, reload (admin-routes.ts).
  app.use(createAdminRouter({ config, stores, logger, adminApiKey, reload: deps.reload, background: deps.background }));

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
