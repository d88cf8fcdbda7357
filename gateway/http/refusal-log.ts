/**
 * Requests refused before routing (bad key, body, JSON, pool, id; 404 routes) get a log line and a
 * metric, as routed requests do: an operator sees a client sending garbage, not silence. The line
 * says what was refused and why (the error code), and the client when it was known by then; never a
 * key, a header value or a body.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { sentErrorCode } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';

const CLIENT = Symbol('spillway.client');
const LANE = Symbol('spillway.lane');
type WithClient = ServerResponse & { [CLIENT]?: string; [LANE]?: 'background' };

/** Notes who sent the request once auth knew, for the refusal's line. */
export function noteClient(res: ServerResponse, client: string): void {
  (res as WithClient)[CLIENT] = client;
}

/** Notes that the background lane sent the request (a batch line), for the refusal's line. */
export function noteLane(res: ServerResponse): void {
  (res as WithClient)[LANE] = 'background';
}

/** Paths are the client's: a long one is cut, so one request cannot write a huge line. */
const PATH_LIMIT = 200;

export function logRefusal(req: IncomingMessage, res: ServerResponse, requestId: string, logger: Logger, metrics: Metrics): void {
  const status = res.statusCode;
  const code = sentErrorCode(res) ?? String(status);
  metrics.rejected.inc({ status: String(status), code });
  if (!logger.isInfoEnabled()) return;
  const path = (req.url ?? '').split('?')[0]!.slice(0, PATH_LIMIT);
  const { [CLIENT]: client, [LANE]: lane } = res as WithClient;
  logger.info('request refused', { requestId, method: req.method, path, status, code, client, lane });
}
