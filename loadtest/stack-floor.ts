/**
 * The floor of the chosen stack: what any gateway on node:http, http-proxy-middleware, ioredis,
 * opossum and prom-client does per request before any logic of its own. The benchmark runs it beside
 * the bare Node proxy and the gateway, so that the gateway's CPU splits into Node's HTTP (the bare
 * proxy), the stack's minimum (this, over the bare proxy) and the gateway's own work (the rest).
 *
 * Per request, and nothing more: the body read whole (a gateway replays it on failover) and parsed;
 * a lease taken and given back on Redis (one command each, auto-pipelined); the attempt through an
 * opossum breaker and http-proxy-middleware with selfHandleResponse (the status is seen before the
 * client gets a byte), its body handed over as the gateway does; one labelled counter and one
 * histogram. No auth, token count, choice of deployment, health model, quotas, usage or header policy.
 *
 *   PORT=0 UPSTREAM=http://127.0.0.1:8080 REDIS_URL=redis://127.0.0.1:6379 node loadtest/stack-floor.ts
 */
import { randomUUID } from 'node:crypto';
import { Agent, createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createProxyMiddleware } from 'http-proxy-middleware';
import { Redis } from 'ioredis';
import CircuitBreaker from 'opossum';
import { Counter, Histogram, Registry } from 'prom-client';
import { bodySource } from '../gateway/upstream/forwarder.ts';

const upstream = new URL(process.env.UPSTREAM ?? 'http://127.0.0.1:8080');
const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', {
  commandTimeout: 1000,
  enableAutoPipelining: true,
  maxRetriesPerRequest: 1,
});
/** One pool's leases, as the gateway keeps them: lease id → deadline. */
const LEASES = '{floor}:leases';
const LEASE_MS = 60_000;
const registry = new Registry();
const requests = new Counter({ name: 'floor_requests_total', help: 'answers', labelNames: ['pool', 'status'], registers: [registry] });
const latency = new Histogram({
  name: 'floor_upstream_seconds',
  help: 'to headers',
  labelNames: ['pool', 'deployment'],
  registers: [registry],
});
// Not lower than the gateway's upstreamMaxSockets default, as for the bare proxy.
const agent = new Agent({ keepAlive: true, maxSockets: 10_000, scheduling: 'lifo' });
const breaker = new CircuitBreaker((send: () => Promise<IncomingMessage>) => send(), { timeout: false, resetTimeout: 10_000 });

interface Attempt {
  body: Buffer;
  answered(response: IncomingMessage): void;
}
const ATTEMPT = Symbol('floor.attempt');
type WithAttempt = IncomingMessage & { [ATTEMPT]?: Attempt };

const proxy = createProxyMiddleware<IncomingMessage, ServerResponse>({
  target: upstream.origin,
  changeOrigin: true,
  selfHandleResponse: true,
  ejectPlugins: true,
  agent,
  router: (req, _res, options) => {
    const { body } = (req as WithAttempt)[ATTEMPT]!;
    // The body in hand, handed over as the gateway's forwarder does.
    options.buffer = bodySource(body);
    options.headers = { 'content-length': String(body.length) };
    return upstream.origin;
  },
  plugins: [
    (server) => {
      server.on('proxyRes', (response, req) => (req as WithAttempt)[ATTEMPT]?.answered(response));
      server.on('error', () => undefined);
    },
  ],
});

function send(req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    (req as WithAttempt)[ATTEMPT] = { body, answered: resolve };
    void proxy(req, res, (error?: unknown) => error && reject(error as Error));
  });
}

async function serve(req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<void> {
  try {
    JSON.parse(body.toString('utf8'));
  } catch {
    return void res.writeHead(400).end();
  }
  const leaseId = randomUUID();
  await redis.zadd(LEASES, Date.now() + LEASE_MS, leaseId);
  let response: IncomingMessage | undefined;
  const over = () => {
    // A client gone mid-stream ends the upstream's too, as the bare proxy does.
    if (response && !response.complete) response.destroy();
    if (response) requests.inc({ pool: 'bench', status: String(response.statusCode) });
    void redis.zrem(LEASES, leaseId).catch(() => undefined);
  };
  // The lease goes back when the client's side closes, however it ends (gone before an answer too).
  if (res.destroyed) return over();
  res.once('close', over);
  const startedAt = performance.now();
  try {
    response = await breaker.fire(() => send(req, res, body));
  } catch {
    if (!res.headersSent) res.writeHead(502).end();
    return;
  }
  if (res.destroyed) return void response.destroy();
  latency.observe({ pool: 'bench', deployment: 'd0' }, (performance.now() - startedAt) / 1000);
  res.writeHead(response.statusCode ?? 502, response.headers);
  response.pipe(res);
}

const server = createServer((req, res) => {
  if (req.url === '/readyz') return void res.end('ok');
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    serve(req, res, Buffer.concat(chunks)).catch(() => {
      // Redis away: the floor answers as a gateway would, and goes on.
      if (!res.headersSent) res.writeHead(503).end();
    });
  });
});
server.keepAliveTimeout = 65_000;
server.listen(Number(process.env.PORT ?? 0), process.env.HOST ?? '127.0.0.1');
process.on('SIGTERM', () => server.close(() => void redis.quit().finally(() => process.exit(0))));
