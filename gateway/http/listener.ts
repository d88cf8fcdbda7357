/**
 * The HTTP server of one instance: proxied routes go straight to their handler, without the Express
 * router and body parser (on this path every microsecond is added to every request: leaving them,
 * with two smaller changes, cut the CPU per request by about a fifth, docs/benchmarks.md); the rest
 * to the ops app.
 *
 * It also keeps the connections in hand (gateway.headersTimeoutMs, requestTimeoutMs,
 * keepAliveTimeoutMs, maxConnections): what Node's parser refuses before a request exists (headers
 * too slow or too large, a request too slow, malformed HTTP) is answered Azure-shaped, logged and
 * counted, with a lingering close; connections over maxConnections, which Node closes on accept,
 * are counted and logged.
 */
import { randomUUID } from 'node:crypto';
import { createServer, maxHeaderSize, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { GatewaySettings } from '../../shared/config/schema.ts';
import { ChurnSet } from '../churn-set.ts';
import { errors, rawErrorResponse, sendError, type AzureError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { isLingering, linger, LINGER_LIMITS, type LingerLimits } from './lingering-close.ts';
import { matchProxiedRoute, type ProxiedRoute } from './proxied-route.ts';

export type ProxiedHandler = (req: IncomingMessage, res: ServerResponse, route: ProxiedRoute | 'bad-path') => Promise<void>;
export type FallbackHandler = (req: IncomingMessage, res: ServerResponse) => void;

export type ConnectionSettings = Pick<GatewaySettings, 'headersTimeoutMs' | 'requestTimeoutMs' | 'keepAliveTimeoutMs' | 'maxConnections'>;

export interface ListenerOptions {
  settings: ConnectionSettings;
  metrics: Pick<Metrics, 'connectionsRefused'>;
  /** The lingering close after an answer the listener writes itself (tests shorten it). */
  linger?: LingerLimits;
}

/** How long close() lets in-flight requests finish before it cuts their connections, unless told otherwise. */
const CLOSE_GRACE_MS = 5000;
/**
 * Once closing, connections whose answer has ended are closed this often (Node closes the idle ones
 * when the server closes, and leaves those that fall idle later open until their keep-alive timeout).
 */
const IDLE_SWEEP_MS = 100;
/** After the connections are cut, the requests' own ends (abort upstream, release the lease, the log line) get this long. */
const SETTLE_MS = 3000;
/** At most one log line per this long about connections over maxConnections (a flood would otherwise flood the log). */
const DROP_LOG_INTERVAL_MS = 10_000;
/**
 * Node checks the header and request timeouts of every connection on an interval (30 s by default,
 * so a 10 s headersTimeout fired after up to 40 s): a tenth of headersTimeoutMs, at most 1 s. The
 * check walks the connections still receiving a request only.
 */
const checkingIntervalOf = (headersTimeoutMs: number) => Math.max(10, Math.min(1000, Math.floor(headersTimeoutMs / 10)));
/** What Node adds to keepAliveTimeout before it closes an idle connection (its default, set here so it cannot move under us). */
const KEEP_ALIVE_TIMEOUT_BUFFER_MS = 1000;

type ParserRefusal = { reason: string; error: AzureError };

/**
 * Each connection's latest response (its request is `res.req`), to tell a slow request from slow
 * headers and not to write over a response. A property, not a WeakMap (an object per request, kept
 * alive through the socket: the young-generation cost forwarder.ts describes).
 */
const LATEST = Symbol('spillway.latestResponse');
type WithLatest = Socket & { [LATEST]?: ServerResponse };

export class Listener {
  private server: Server | undefined;
  private readonly handler: (req: IncomingMessage, res: ServerResponse) => void;
  private readonly logger: Logger;
  private readonly options: ListenerOptions;
  private dropsUnlogged = 0;
  private dropLogTimer: NodeJS.Timeout | undefined;
  /** Proxied requests whose handler has not returned (the lease released, the log line written). Not a Set: churn-set.ts. */
  private readonly active = new ChurnSet<ServerResponse>();
  private settled: (() => void) | undefined;
  /** From drain() on, every answer closes its connection (`connection: close`). */
  private draining = false;
  private closing: Promise<{ cut: number }> | undefined;

  constructor(proxied: ProxiedHandler, fallback: FallbackHandler, logger: Logger, options: ListenerOptions) {
    this.logger = logger;
    this.options = options;
    const done = (res: ServerResponse) => {
      this.active.delete(res);
      if (this.active.size === 0) this.settled?.();
    };
    this.handler = (req, res) => {
      (req.socket as WithLatest)[LATEST] = res;
      // Shutting down: a keep-alive client reconnects for its next request, and reaches another instance.
      if (this.draining) res.shouldKeepAlive = false;
      const route = matchProxiedRoute(req.method, req.url);
      if (!route) return fallback(req, res);
      this.active.add(res);
      proxied(req, res, route).then(
        () => done(res),
        (error: Error) => {
          logger.error('unhandled error', { error: error.message });
          sendError(res, errors.internal());
          done(res);
        },
      );
    };
  }

  async listen(port: number, host: string): Promise<{ server: Server; url: string }> {
    const { settings } = this.options;
    // requestTimeout covers a request's arrival only (from its first byte until the parser has it
    // whole): a response may stream for as long as it lasts; the gateway's own idle timer guards it.
    const server = createServer(
      {
        headersTimeout: settings.headersTimeoutMs,
        requestTimeout: settings.requestTimeoutMs,
        keepAliveTimeout: settings.keepAliveTimeoutMs,
        keepAliveTimeoutBuffer: KEEP_ALIVE_TIMEOUT_BUFFER_MS,
        connectionsCheckingInterval: checkingIntervalOf(settings.headersTimeoutMs),
      },
      this.handler,
    );
    server.maxConnections = settings.maxConnections;
    server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => this.refuse(error, socket));
    server.on('drop', () => this.dropped());
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const address = server.address() as AddressInfo;
    const shownHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
    return { server, url: `http://${shownHost}:${address.port}` };
  }

  /** Proxied requests being handled now. */
  get inFlight(): number {
    return this.active.size;
  }

  /** Shutting down, still accepting: from now on every answer says `connection: close`. */
  drain(): void {
    this.draining = true;
  }

  /** Stops accepting; idle connections close at once, busy ones get CLOSE_GRACE_MS (see `stop`). */
  async close(): Promise<void> {
    await this.stop(CLOSE_GRACE_MS);
  }

  /**
   * Stops accepting (new connections are refused); idle connections close at once, busy ones when
   * their answer ends, or at `graceMs` at the latest: then they are cut, and their requests end as
   * a client's disconnect ends them (upstream aborted, lease released). Resolves once every
   * proxied request has ended (or SETTLE_MS after the cut), with how many were cut. The first call's
   * grace counts.
   */
  stop(graceMs: number): Promise<{ cut: number }> {
    this.closing ??= this.closeWithin(graceMs);
    return this.closing;
  }

  private async closeWithin(graceMs: number): Promise<{ cut: number }> {
    this.draining = true;
    const { server } = this;
    if (!server) return { cut: 0 };
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    const sweep = setInterval(() => server.closeIdleConnections(), IDLE_SWEEP_MS);
    let cut = 0;
    const timer = setTimeout(
      () => {
        cut = this.active.values().filter((res) => !res.writableFinished).length;
        server.closeAllConnections();
      },
      Math.max(0, graceMs),
    );
    await closed;
    clearTimeout(timer);
    clearInterval(sweep);
    await this.allSettled(SETTLE_MS);
    clearTimeout(this.dropLogTimer);
    this.logDrops();
    return { cut };
  }

  /** Resolves when no proxied request is being handled, or after `ms`. */
  private async allSettled(ms: number): Promise<void> {
    if (this.active.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.settled = resolve;
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
    this.settled = undefined;
  }

  /**
   * Node's parser refused what arrived on `socket` (or its timers did), before or instead of a
   * request. Answered Azure-shaped where the connection can still take an answer; a socket error
   * (a reset, a broken pipe) has nobody to answer and is only closed.
   */
  private refuse(error: NodeJS.ErrnoException, socket: Socket): void {
    // The discarded rest of a refused request: its lingering close ends it.
    if (isLingering(socket)) return;
    // The connection's latest request, unless it is over (received whole and answered): a refusal
    // then concerns the next one, whose headers Node's parser has not finished.
    const latest = (socket as WithLatest)[LATEST];
    const exchange = latest && !(latest.req.complete && latest.writableFinished) ? latest : undefined;
    const arriving = exchange && !exchange.req.complete ? exchange.req : undefined;
    const refusal = this.refusalOf(error, arriving !== undefined);
    if (!refusal) return void socket.destroy();
    this.options.metrics.connectionsRefused.inc({ reason: refusal.reason });
    const fields = { reason: refusal.reason, code: error.code, remoteAddress: socket.remoteAddress };
    const limits = this.options.linger ?? LINGER_LIMITS;
    const res = exchange;
    if (!res?.headersSent && socket.writable) {
      const requestId = randomUUID();
      this.logger.info('request refused by the listener', { requestId, status: refusal.error.status, ...fields });
      return linger(socket, limits, arriving, rawErrorResponse(refusal.error, { 'x-request-id': requestId }));
    }
    // No answer can follow a response under way, or one sent whole (it answered the request still
    // arriving, before its body was read: the client has its answer).
    this.logger.info('request refused by the listener', { status: res?.statusCode, answered: false, ...fields });
    if (res?.writableFinished && socket.writable) linger(socket, limits, arriving);
    else socket.destroy();
  }

  private refusalOf(error: NodeJS.ErrnoException, requestArriving: boolean): ParserRefusal | undefined {
    const { settings } = this.options;
    const code = error.code ?? '';
    if (code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      return requestArriving
        ? { reason: 'request-timeout', error: errors.arrivalTimeout('request', settings.requestTimeoutMs) }
        : { reason: 'headers-timeout', error: errors.arrivalTimeout('headers', settings.headersTimeoutMs) };
    }
    if (code === 'HPE_HEADER_OVERFLOW') {
      return { reason: 'headers-too-large', error: errors.headersTooLarge(maxHeaderSize) };
    }
    if (code.startsWith('HPE_')) return { reason: 'malformed', error: errors.malformedRequest() };
    return undefined;
  }

  /** A connection over maxConnections, closed by Node on accept: counted, and logged at most once per DROP_LOG_INTERVAL_MS. */
  private dropped(): void {
    this.options.metrics.connectionsRefused.inc({ reason: 'max-connections' });
    this.dropsUnlogged += 1;
    if (!this.dropLogTimer) this.logDrops();
  }

  private logDrops(): void {
    this.dropLogTimer = undefined;
    if (this.dropsUnlogged === 0) return;
    // The first drop is logged at once, the next ones as one line per DROP_LOG_INTERVAL_MS.
    this.logger.warn('connections over maxConnections closed on accept', {
      dropped: this.dropsUnlogged,
      maxConnections: this.options.settings.maxConnections,
    });
    this.dropsUnlogged = 0;
    this.dropLogTimer = setTimeout(() => this.logDrops(), DROP_LOG_INTERVAL_MS);
    this.dropLogTimer.unref();
  }
}
