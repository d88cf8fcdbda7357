/**
 * Who may use /admin/*: a request that presents the admin key (`api-key` or `Authorization: Bearer`,
 * as the admin API always took), or a browser holding the status page's session cookie.
 *
 * The session cookie is `spillway_admin=v1.<expiresAt>.<mac>`: `expiresAt` in epoch ms, `mac` the
 * HMAC-SHA256 of the version and expiry under a key derived from the admin key itself. Nothing is kept
 * in memory or in Redis, so a cookie minted by one instance is good on every other instance behind the
 * load balancer, and after restarts; changing ADMIN_API_KEY voids every session at once (the way to
 * revoke them all). The key is never in the cookie and cannot be recovered from it. Signing out clears
 * the cookie in that browser; the token itself stays valid until it expires (SESSION_TTL_MS), which
 * HttpOnly (no script can read it) and SameSite=Strict (no other site's page sends it) make hard to
 * exploit.
 *
 * CSRF: besides SameSite=Strict, a state-changing call (anything but GET / HEAD) authenticated by the
 * cookie alone must carry `x-spillway-admin: 1`. A page on another origin cannot add a custom header
 * without a CORS preflight, which the gateway never grants.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { keyMatches, presentedKey } from '../auth.ts';

export const SESSION_COOKIE = 'spillway_admin';
/** The header the status page sends with every call; required on state-changing calls made with the cookie. */
export const CSRF_HEADER = 'x-spillway-admin';
/** A session lasts this long from sign-in (a working day); signing in again starts a new one. */
export const SESSION_TTL_MS = 8 * 60 * 60_000;
/** Tolerance for instance clocks ahead of this one: an expiry further out than TTL + this is refused. */
const CLOCK_SKEW_MS = 5 * 60_000;
const VERSION = 'v1';
const SAFE_METHODS = new Set(['GET', 'HEAD']);

/** The signing key: derived from the admin key, so a session MAC is never a MAC of anything else under it. */
let derived: { adminKey: string; key: Buffer } | undefined;
function signingKey(adminKey: string): Buffer {
  if (derived?.adminKey !== adminKey) {
    derived = { adminKey, key: createHmac('sha256', adminKey).update('spillway status-page session key').digest() };
  }
  return derived.key;
}

function mac(adminKey: string, expiresAt: number): Buffer {
  return createHmac('sha256', signingKey(adminKey)).update(`${VERSION}.${expiresAt}`).digest();
}

/** A new session token, good until `now + SESSION_TTL_MS`. */
export function mintSession(adminKey: string, now = Date.now()): string {
  const expiresAt = now + SESSION_TTL_MS;
  return `${VERSION}.${expiresAt}.${mac(adminKey, expiresAt).toString('base64url')}`;
}

/** True when `token` was minted under this admin key and has not expired. Constant time in the MAC. */
export function sessionValid(token: string, adminKey: string, now = Date.now()): boolean {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== VERSION || !/^\d{1,16}$/.test(parts[1]!)) return false;
  const expiresAt = Number(parts[1]);
  if (expiresAt <= now || expiresAt > now + SESSION_TTL_MS + CLOCK_SKEW_MS) return false;
  const presented = Buffer.from(parts[2]!, 'base64url');
  const expected = mac(adminKey, expiresAt);
  return presented.length === expected.length && timingSafeEqual(presented, expected);
}

/** Every value the `cookie` header gives `name` (a browser may send several, for different paths). */
export function cookieValues(header: string | undefined, name: string): string[] {
  if (!header) return [];
  const values: string[] = [];
  for (const pair of header.split(';')) {
    const at = pair.indexOf('=');
    if (at > 0 && pair.slice(0, at).trim() === name) values.push(pair.slice(at + 1).trim());
  }
  return values;
}

/** True when the request carries a valid session cookie (whatever its method). */
export function hasSession(req: IncomingMessage, adminKey: string, now = Date.now()): boolean {
  return cookieValues(req.headers.cookie, SESSION_COOKIE).some((token) => sessionValid(token, adminKey, now));
}

/**
 * May this request use the admin API? The admin key in a header, always; or the session cookie, for
 * GET / HEAD, and for other methods only with `x-spillway-admin: 1` (CSRF).
 */
export function isAdmin(req: IncomingMessage, adminKey: string): boolean {
  if (keyMatches(presentedKey(req.headers), adminKey)) return true;
  if (!hasSession(req, adminKey)) return false;
  return SAFE_METHODS.has(req.method ?? 'GET') || req.headers[CSRF_HEADER] === '1';
}

/** The Set-Cookie value that starts a session; Secure when the browser reached us (or the proxy) over https. */
export function sessionCookie(token: string, secure: boolean): string {
  const attributes = [`${SESSION_COOKIE}=${token}`, 'Path=/admin', `Max-Age=${SESSION_TTL_MS / 1000}`, 'HttpOnly', 'SameSite=Strict'];
  if (secure) attributes.push('Secure');
  return attributes.join('; ');
}

/** The Set-Cookie value that ends it. */
export function clearedCookie(secure: boolean): string {
  return [`${SESSION_COOKIE}=`, 'Path=/admin', 'Max-Age=0', 'HttpOnly', 'SameSite=Strict', ...(secure ? ['Secure'] : [])].join('; ');
}

/** Over https: the connection itself, or the first `x-forwarded-proto` a TLS-terminating proxy set. */
export function cameOverHttps(req: IncomingMessage): boolean {
  if ((req.socket as { encrypted?: boolean }).encrypted) return true;
  const forwarded = req.headers['x-forwarded-proto'];
  const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim().toLowerCase();
  return first === 'https';
}
