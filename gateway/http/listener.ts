/**
 * The HTTP server of one instance: proxied routes go straight to their handler, without the Express
 * router and body parser (on this path every microsecond is added to every request: leaving them,
 * with two smaller changes, cut the CPU per request by about a fifth, docs/benchmarks.md); the rest
 * to the ops app.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { errors, sendError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { matchProxiedRoute, type ProxiedRoute } from './proxied-route.ts';

export type ProxiedHandler = (req: IncomingMessage, res: ServerResponse, route: ProxiedRoute | 'bad-path') => Promise<void>;
export type FallbackHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** How long close() lets in-flight requests finish before it cuts their connections. */
const CLOSE_GRACE_MS = 5000;

export class Listener {
  private server: Server | undefined;
  private readonly handler: (req: IncomingMessage, res: ServerResponse) => void;

  constructor(proxied: ProxiedHandler, fallback: FallbackHandler, logger: Logger) {
    this.handler = (req, res) => {
      const route = matchProxiedRoute(req.method, req.url);
      if (!route) return fallback(req, res);
      proxied(req, res, route).catch((error: Error) => {
        logger.error('unhandled error', { error: error.message });
        sendError(res, errors.internal());
      });
    };
  }

  async listen(port: number, host: string): Promise<{ server: Server; url: string }> {
    const server = createServer(this.handler);
    this.server = server;
    // Streams may legitimately stay open for minutes; the gateway's own idle timer guards them.
    server.requestTimeout = 0;
    server.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const address = server.address() as AddressInfo;
    const shownHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
    return { server, url: `http://${shownHost}:${address.port}` };
  }

  /** Stops accepting; idle connections close at once, busy ones get CLOSE_GRACE_MS. */
  async close(): Promise<void> {
    const { server } = this;
    if (!server) return;
    const closing = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    const cut = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
    await closing;
    clearTimeout(cut);
  }
}
