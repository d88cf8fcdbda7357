/**
 * Every header rule of the proxy in one place: what goes upstream with an attempt, what of the
 * deployment's answer reaches the client, and what the gateway adds to it.
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';

/** The PTU utilization percentage; only provisioned deployments send it. */
export const UTILIZATION_HEADER = 'azure-openai-deployment-utilization';

/** The background lane's per-process secret (gateway/http/auth.ts LaneMarker): marks a Batch API line. */
export const LANE_HEADER = 'x-spillway-lane';
/** The client a lane request runs as, trusted only beside the right secret. */
export const LANE_CLIENT_HEADER = 'x-spillway-client';

/**
 * Client headers that must not reach a deployment: the client's own credentials, the lane's marks, hop-by-hop fields,
 * and how the client framed its body (transfer-encoding, content-encoding): the body goes upstream
 * whole and plain, with its own content-length. A chunked client body once reached the deployment
 * with both transfer-encoding and content-length, which an HTTP server must refuse.
 */
const STRIPPED_REQUEST_HEADERS = [
  'authorization',
  'api-key',
  'cookie',
  LANE_HEADER,
  LANE_CLIENT_HEADER,
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'te',
  'trailer',
  'upgrade',
  'proxy-authorization',
  'proxy-connection',
  'keep-alive',
  'transfer-encoding',
  'content-encoding',
  // Hop-by-hop: the gateway's pooled connection to the deployment stays open whatever the client's does.
  'connection',
];

/**
 * The client headers to remove from an attempt: the fixed list, and whatever the client's
 * `Connection` header names as hop-by-hop (RFC 9110 §7.6.1).
 */
export function strippedRequestHeaders(connection: string | number | string[] | undefined): readonly string[] {
  if (typeof connection !== 'string' || !connection.includes(',')) return STRIPPED_REQUEST_HEADERS;
  const named = connection.split(',').map((token) => token.trim().toLowerCase());
  return [...STRIPPED_REQUEST_HEADERS, ...named.filter((name) => name && name !== 'close' && name !== 'keep-alive')];
}

/** Upstream response headers that describe one deployment or one hop, not what the client addressed. */
const DROPPED_RESPONSE_HEADERS = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'proxy-authenticate',
  'set-cookie',
  'x-ratelimit-remaining-requests',
  'x-ratelimit-remaining-tokens',
  'x-ratelimit-limit-requests',
  'x-ratelimit-limit-tokens',
  'x-ratelimit-reset-requests',
  'x-ratelimit-reset-tokens',
  UTILIZATION_HEADER,
]);

/** How an attempt authenticates upstream: the deployment's api-key (a string), or a Microsoft Entra ID token. */
export type UpstreamAuth = string | { readonly bearer: string };

/**
 * The headers an attempt sets upstream: the deployment's own credential, never the client's (its key
 * as `api-key`, or its Entra ID token as `Authorization: Bearer` and then no `api-key` at all), and
 * the request id.
 */
export function attemptHeaders(auth: UpstreamAuth, requestId: string): Record<string, string> {
  if (typeof auth === 'string') return { 'api-key': auth, 'x-request-id': requestId };
  return { authorization: `Bearer ${auth.bearer}`, 'x-request-id': requestId };
}

/** What the forwarder adds for the body it sends: its exact length, and no compression of the answer (usage is read from it). */
export function bodyHeaders(headers: Record<string, string>, body: Buffer): Record<string, string> {
  return { ...headers, 'content-length': String(body.length), 'accept-encoding': 'identity' };
}

/** A response header's value; the first when it came more than once. */
export function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** A numeric header (a trailing % allowed), or undefined when absent or not a number. */
export function numberHeader(headers: IncomingHttpHeaders, name: string): number | undefined {
  const text = header(headers, name);
  if (text === undefined || text.trim() === '') return undefined;
  const digits = text.trim().replace(/%$/, '');
  if (digits === '') return undefined;
  const parsed = Number(digits);
  return Number.isFinite(parsed) ? parsed : undefined;
}

/** True when the response came from a provisioned deployment (only PTU sends the utilization header). */
export function isProvisioned(headers: IncomingHttpHeaders): boolean {
  return headers[UTILIZATION_HEADER] !== undefined;
}

/** No configured header hidden (gateway.hiddenResponseHeaders is the operator's list). */
const NONE_HIDDEN: ReadonlySet<string> = new Set();

/** The operator's hidden response headers, as writeUpstreamHead matches them (Node's header names are lower case). */
export function hiddenHeaderSet(names: readonly string[]): ReadonlySet<string> {
  return new Set(names.map((name) => name.toLowerCase()));
}

/** What the gateway says about how it served a request. */
export interface GatewayHeaders {
  requestId: string;
  /** The deployment that answered (or was tried last). */
  deployment: string | undefined;
  attempts: number;
}

/**
 * Sets the head of the client's response from a deployment's: its status and headers less the dropped
 * ones, plus the gateway's own. No flushHeaders: the head goes out with the first body bytes, in one
 * write (a whole JSON answer is then one packet, a stream's head leaves with its first event as Azure
 * sends it).
 */
export function writeUpstreamHead(
  res: ServerResponse,
  status: number,
  upstream: IncomingHttpHeaders,
  gateway: GatewayHeaders,
  hidden: ReadonlySet<string> = NONE_HIDDEN,
): void {
  for (const name in upstream) {
    const value = upstream[name];
    if (value === undefined || DROPPED_RESPONSE_HEADERS.has(name) || hidden.has(name)) continue;
    res.setHeader(name, value);
  }
  res.setHeader('x-request-id', gateway.requestId);
  setAttemptHeaders(res, gateway);
  res.statusCode = status;
}

/** x-gateway-deployment and x-gateway-attempts. */
export function setAttemptHeaders(res: ServerResponse, gateway: GatewayHeaders): void {
  if (gateway.deployment) res.setHeader('x-gateway-deployment', gateway.deployment);
  res.setHeader('x-gateway-attempts', String(gateway.attempts));
}

/** A client quota's remaining tokens and requests, in Azure's own header names. */
export function setQuotaHeaders(res: ServerResponse, remaining: { tokens?: number; requests?: number }): void {
  if (remaining.tokens !== undefined) res.setHeader('x-ratelimit-remaining-tokens', String(remaining.tokens));
  if (remaining.requests !== undefined) res.setHeader('x-ratelimit-remaining-requests', String(remaining.requests));
}
