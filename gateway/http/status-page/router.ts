/**
 * The live status page at /admin/: plain HTML, CSS and JavaScript from ./assets (no build step, no CDN),
 * read once per process and served with a Content-Security-Policy of `default-src 'self'`. The page
 * polls GET /admin/pools every second and POSTs drain / enable / reset; what it may do is decided by the
 * admin guard (session.ts `isAdmin`), which takes the session cookie this router hands out:
 *
 *   GET  /admin, /admin/           the page (/admin redirects to /admin/, so relative URLs resolve)
 *   GET  /admin/app.js,            its script, style sheet and icon
 *        style.css, favicon.svg
 *   POST /admin/login              form field `key` (urlencoded): the admin key, compared in constant time;
 *                                  right → 204 (or 303 to /admin/ for a plain form post) with the cookie,
 *                                  wrong → 401
 *   POST /admin/logout             clears the cookie (204); needs `x-spillway-admin: 1`, as every
 *                                  state-changing call made with the cookie does
 *
 * These answer without a key or cookie (the page holds no data; its script asks for it), and like every
 * /admin/* route they answer 404 when no ADMIN_API_KEY is set. Mounted by admin-routes.ts before its guard.
 */
import { readFileSync } from 'node:fs';
import express, { type NextFunction, type Request, type Response } from 'express';
import { errors, sendError } from '../../errors.ts';
import type { Logger } from '../../logger.ts';
import { keyMatches } from '../auth.ts';
import { cameOverHttps, clearedCookie, CSRF_HEADER, mintSession, sessionCookie } from './session.ts';

export interface StatusPageDeps {
  /** The admin key; absent → every route here passes on (the admin guard then answers 404). */
  adminApiKey: string | undefined;
  logger: Logger;
}

/** The directory of the page's files: beside this module, in gateway/ and (copied by scripts/copy-assets.mjs) in dist/gateway/. */
export const ASSETS_URL = new URL('./assets/', import.meta.url);

const ASSETS = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
  'favicon.svg': 'image/svg+xml',
} as const;
type AssetName = keyof typeof ASSETS;

/** Headers on every file of the page: nothing but its own origin's files, never framed, never cached. */
const PAGE_HEADERS: Record<string, string> = {
  'content-security-policy': "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

/** The files, read on first use and kept for the life of the process; an Error when one could not be read. */
let assets: Map<AssetName, Buffer> | Error | undefined;
function loadAssets(): Map<AssetName, Buffer> | Error {
  if (assets !== undefined) return assets;
  try {
    assets = new Map(Object.keys(ASSETS).map((name) => [name as AssetName, readFileSync(new URL(name, ASSETS_URL))]));
  } catch (error) {
    assets = new Error(`status page files missing (${(error as Error).message}); the build must copy gateway/http/status-page/assets`);
  }
  return assets;
}

export function createStatusPageRouter(deps: StatusPageDeps): express.Router {
  const { adminApiKey, logger } = deps;
  const router = express.Router();
  if (!adminApiKey) return router;

  const files = loadAssets();
  if (files instanceof Error) logger.error('admin: status page unavailable', { error: files.message });

  const serve = (name: AssetName) => (_req: Request, res: Response) => {
    if (files instanceof Error) return sendError(res, errors.unavailable('The status page is not part of this build.'));
    res.status(200).set(PAGE_HEADERS).type(ASSETS[name]).end(files.get(name));
  };

  router.get(['/admin', '/admin/'], (req: Request, res: Response, next: NextFunction) => {
    const path = req.originalUrl.split('?')[0];
    if (path === '/admin') return res.redirect(301, '/admin/');
    if (path !== '/admin/') return next();
    serve('index.html')(req, res);
  });
  router.get('/admin/app.js', serve('app.js'));
  router.get('/admin/style.css', serve('style.css'));
  router.get('/admin/favicon.svg', serve('favicon.svg'));

  const form = express.urlencoded({ extended: false, limit: '4kb', type: 'application/x-www-form-urlencoded' });
  router.post('/admin/login', form, (req: Request, res: Response) => {
    const presented = (req.body as Record<string, unknown> | undefined)?.key;
    if (typeof presented !== 'string' || !keyMatches(presented, adminApiKey)) return sendError(res, errors.unauthorized());
    const secure = cameOverHttps(req);
    res.setHeader('set-cookie', sessionCookie(mintSession(adminApiKey), secure));
    res.setHeader('cache-control', 'no-store');
    logger.warn('admin: status page sign-in', {
      from: req.socket.remoteAddress ?? 'unknown',
      at: new Date().toISOString(),
      requestId: res.getHeader('x-request-id'),
    });
    // The page's script asks with its header and reads the status; a plain form post is sent to the page.
    if (req.headers[CSRF_HEADER] === '1') res.status(204).end();
    else res.redirect(303, '/admin/');
  });

  router.post('/admin/logout', (req: Request, res: Response) => {
    // State-changing, so the page's header is required here too (another site's form cannot send it).
    if (req.headers[CSRF_HEADER] !== '1') return sendError(res, errors.badRequest(`Sign out with the ${CSRF_HEADER}: 1 header.`));
    res.setHeader('set-cookie', clearedCookie(cameOverHttps(req)));
    res.setHeader('cache-control', 'no-store');
    res.status(204).end();
  });

  return router;
}
