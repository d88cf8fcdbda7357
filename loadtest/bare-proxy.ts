/**
 * The floor of any Node.js gateway: a reverse proxy with node:http alone (keep-alive agent, the
 * request and response piped through, no routing, no body parsing, no state). The benchmark runs it
 * beside the gateway so that "what the gateway costs" splits into what Node's HTTP stack costs on
 * this machine and what the gateway adds on top.
 *
 *   PORT=0 UPSTREAM=http://127.0.0.1:8080 node loadtest/bare-proxy.ts
 *
 * BARE_PROXY_STATS=1 adds GET /__bare/stats (the scale bench's counterpart of the gateway's /metrics):
 * heap, event-loop delay since the previous read (monitorEventLoopDelay at prom-client's 10 ms
 * resolution, reset on read, as prom-client resets on collect) and failed accepts (EMFILE).
 */
import { Agent, createServer, request } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const upstream = new URL(process.env.UPSTREAM ?? 'http://127.0.0.1:8080');
// Not lower than the gateway's upstreamMaxSockets default, so that the baseline has no cap the gateway lacks.
const agent = new Agent({ keepAlive: true, maxSockets: Number(process.env.MAX_SOCKETS ?? 10_000), scheduling: 'lifo' });
const stats = process.env.BARE_PROXY_STATS === '1' ? statsProbe() : undefined;

/** What /__bare/stats answers; the event-loop histogram starts over at every read. */
function statsProbe() {
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const counts = { acceptErrors: 0, upstreamErrors: 0 };
  return {
    counts,
    read() {
      const ms = (ns: number) => ns / 1e6;
      const body = {
        heapUsed: process.memoryUsage().heapUsed,
        eventLoopDelayMs: { p50: ms(delay.percentile(50)), p99: ms(delay.percentile(99)), max: ms(delay.max) },
        ...counts,
      };
      delay.reset();
      return JSON.stringify(body);
    },
  };
}

const server = createServer((req, res) => {
  if (req.url === '/readyz') {
    res.end('ok');
    return;
  }
  if (stats && req.url === '/__bare/stats') {
    res.setHeader('content-type', 'application/json');
    res.end(stats.read());
    return;
  }
  const outgoing = request(
    {
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers: { ...req.headers, host: upstream.host },
      agent,
    },
    (response) => {
      res.writeHead(response.statusCode ?? 502, response.headers);
      response.pipe(res);
      // A client gone mid-stream ends the upstream's too, as any proxy does (pipe alone leaves it running).
      res.on('close', () => {
        if (!response.complete) response.destroy();
      });
    },
  );
  outgoing.on('error', () => {
    if (stats) stats.counts.upstreamErrors += 1;
    if (!res.headersSent) res.writeHead(502).end();
    else res.destroy();
  });
  req.pipe(outgoing);
});
server.keepAliveTimeout = 65_000;
// A failed accept (EMFILE past the open-file limit) must not end the process: the gateway survives it too.
server.on('error', (error: NodeJS.ErrnoException) => {
  if (error.syscall !== 'accept') throw error;
  if (stats) stats.counts.acceptErrors += 1;
});
server.listen(Number(process.env.PORT ?? 0), process.env.HOST ?? '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
