/**
 * The admin API, mounted by ops-routes.ts and guarded by ADMIN_API_KEY (`api-key` or `Authorization:
 * Bearer`): absent, every /admin/* route answers 404; a missing or wrong key gets 401. The status page's
 * session cookie counts as the key (status-page/session.ts); the page itself is status-page/router.ts.
 *
 *   GET  /admin/pools                                  every pool's deployments as the store sees them
 *   POST /admin/pools/{pool}/deployments/{id}/drain    out of rotation for every instance until enabled;
 *                                                      requests in flight on it finish
 *   POST /admin/pools/{pool}/deployments/{id}/enable   back in rotation (its cooldown and circuit apply as they are)
 *   POST /admin/pools/{pool}/deployments/{id}/reset    cooldown ended, circuit closed, ejections forgotten
 *   POST /admin/reload                                 re-reads GATEWAY_CONFIG, as SIGHUP does (gateway/live-config.ts):
 *                                                      200 with what changed, 422 with the file's problems
 *                                                      (the old config keeps serving), 409 without a file
 *
 * The actions are idempotent and answer the deployment's new state. Each is logged as one JSON line:
 * what, which deployment, who (the client's `x-admin-user`, sanitised and bounded, else "admin"), from
 * where (the peer address) and when. The admin key is never logged or echoed.
 */
import express, { type Request, type Response } from 'express';
import type { BackgroundStatus } from '../background/assemble.ts';
import { errors, sendError, type AzureError } from '../errors.ts';
import { within } from '../bounded-wait.ts';
import type { Logger } from '../logger.ts';
import type { CurrentPools } from '../pools.ts';
import type { LiveStore } from '../routing/live-store.ts';
import { createStatusPageRouter } from './status-page/router.ts';
import { isAdmin } from './status-page/session.ts';

export interface AdminDeps {
  /** The config in force, read per request (a reload swaps it). */
  config: CurrentPools;
  stores: LiveStore;
  logger: Logger;
  /** Guards /admin/*; absent → the admin routes answer 404. */
  adminApiKey: string | undefined;
  /** The Batch API's lane and the prober, as /admin/pools shows them (Redis only); absent → not shown. */
  background?: () => Promise<BackgroundStatus>;
  /** Re-reads the config and puts it in force (POST /admin/reload); absent → 404. Never throws for a bad file. */
  reload?: (trigger: { trigger: string; who: string; from: string; requestId: unknown }) => { status: string };
}

export const ADMIN_ACTIONS = ['drain', 'enable', 'reset'] as const;
export type AdminAction = (typeof ADMIN_ACTIONS)[number];

/** The longest `x-admin-user` kept (longer ones are cut). */
export const ADMIN_USER_MAX_LENGTH = 64;

/**
 * Who acts, as the log names them: the client's `x-admin-user` cut to ADMIN_USER_MAX_LENGTH, with every
 * character other than letters, digits and `. _ @ + -` replaced by `_` (no control characters, quotes
 * or line breaks reach a log viewer); "admin" when absent or empty.
 */
export function adminUser(header: string | string[] | undefined): string {
  const raw = (Array.isArray(header) ? header[0] : header) ?? '';
  const cleaned = [...raw.trim()]
    .slice(0, ADMIN_USER_MAX_LENGTH)
    .join('')
    .replace(/[^\p{L}\p{N}._@+-]/gu, '_');
  return cleaned === '' ? 'admin' : cleaned;
}

function unknownDeployment(pool: string, id: string): AzureError {
  return {
    status: 404,
    code: 'DeploymentNotFound',
    message: `The pool ${JSON.stringify(pool)} has no deployment ${JSON.stringify(id.slice(0, 256))}.`,
  };
}

function isAction(value: string): value is AdminAction {
  return (ADMIN_ACTIONS as readonly string[]).includes(value);
}

const LOG_MESSAGES: Record<AdminAction, string> = {
  drain: 'admin: deployment drained (out of rotation for every instance until enabled)',
  enable: 'admin: deployment enabled (back in rotation)',
  reset: 'admin: deployment reset (cooldown and circuit cleared)',
};

export function createAdminRouter(deps: AdminDeps): express.Router {
  const { config, stores, logger, adminApiKey } = deps;
  const router = express.Router();

  // The status page (/admin/, its files, login and logout) answers before the guard; it holds no data.
  router.use(createStatusPageRouter({ adminApiKey, logger }));
  router.use('/admin', (req: Request, res: Response, next: () => void) => {
    if (!adminApiKey) return sendError(res, errors.notFound());
    // The admin key in a header, or the status page's session cookie (with its CSRF header on POSTs).
    if (!isAdmin(req, adminApiKey)) return sendError(res, errors.unauthorized());
    next();
  });

  router.get('/admin/pools', async (_req, res) => {
    try {
      const result: Record<string, unknown> = {};
      // The lane and the prober, when there are: within a budget, and never at the cost of the pools' state.
      const background = deps.background ? await withinBudget(deps.background(), logger) : undefined;
      for (const pool of config.current.pools.values()) {
        // Each deployment's budget beside its usage (null: unlimited), for utilisation = usage / budget.
        const budgets = new Map(pool.layout.deployments.map((d) => [d.id, { tpm: d.tpm ?? null, rpm: d.rpm ?? null }]));
        const probes = background?.probes.get(pool.name);
        const deployments = (await stores.snapshot(pool.layout)).map((d) => ({
          ...d,
          ...budgets.get(d.id),
          ...(background ? { lastProbe: probes?.get(d.id) ?? null } : {}),
        }));
        const lane = background?.lanes.get(pool.name);
        result[pool.name] = {
          strategy: pool.config.strategy,
          slowStartMs: pool.config.slowStartMs,
          ...(lane ? { lane } : {}),
          deployments,
        };
      }
      // `now`: this instance's clock, against which the page counts down cooldowns and open circuits.
      res.json({ now: Date.now(), pools: result });
    } catch (error) {
      logger.warn('admin snapshot failed', { error: (error as Error).message });
      sendError(res, errors.unavailable('The state store is unavailable.'));
    }
  });

  router.post('/admin/pools/:pool/deployments/:id/:action', async (req: Request, res: Response) => {
    const { pool: poolName, id, action } = req.params as { pool: string; id: string; action: string };
    if (!isAction(action)) return sendError(res, errors.notFound());
    const pool = config.current.pools.get(poolName);
    if (!pool) return sendError(res, errors.unknownPool(poolName.slice(0, 256)));
    if (!pool.deployments.has(id)) return sendError(res, unknownDeployment(pool.name, id));
    const fields = {
      action,
      pool: pool.name,
      deployment: id,
      who: adminUser(req.headers['x-admin-user']),
      from: req.socket.remoteAddress ?? 'unknown',
      at: new Date().toISOString(),
      requestId: res.getHeader('x-request-id'),
    };
    try {
      let changed: boolean | undefined;
      if (action === 'drain') changed = await stores.drain(pool.name, id);
      else if (action === 'enable') changed = await stores.enable(pool.name, id);
      else await stores.reset(pool.name, id);
      // Cluster-wide now, or (the store not answering) in this instance's view until the store answers again.
      const scope = stores.current() === stores.shared ? 'cluster' : 'instance';
      logger.warn(LOG_MESSAGES[action], { ...fields, changed, scope });
      const state = (await stores.snapshot(pool.layout)).find((d) => d.id === id);
      res.json({ action, pool: pool.name, changed, scope, deployment: state });
    } catch (error) {
      logger.error('admin action failed', { ...fields, error: (error as Error).message });
      sendError(res, errors.unavailable('The state store is unavailable.'));
    }
  });

  router.post('/admin/reload', (req: Request, res: Response) => {
    if (!deps.reload) return sendError(res, errors.notFound());
    const outcome = deps.reload({
      trigger: 'POST /admin/reload',
      who: adminUser(req.headers['x-admin-user']),
      from: req.socket.remoteAddress ?? 'unknown',
      requestId: res.getHeader('x-request-id'),
    });
    res.status(RELOAD_STATUS[outcome.status] ?? 500).json(outcome);
  });

  return router;
}

/** POST /admin/reload's answer: put in force, rejected (the file's problems), or no file to read. */
const RELOAD_STATUS: Record<string, number> = { reloaded: 200, rejected: 422, unavailable: 409 };

/** How long /admin/pools waits for the lane's and the prober's state. */
const BACKGROUND_BUDGET_MS = 500;

function withinBudget(reading: Promise<BackgroundStatus>, logger: Logger): Promise<BackgroundStatus | undefined> {
  const known = reading.catch((error: Error) => void logger.warn('admin: no state of the background lane', { error: error.message }));
  return within(known, BACKGROUND_BUDGET_MS);
}
