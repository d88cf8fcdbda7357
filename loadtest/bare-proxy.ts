/**
 * The floor of any Node.js gateway: a reverse proxy with node:http alone (keep-alive agent, the
 * request and response piped through, no routing, no body parsing, no state). The benchmark runs it
 * beside the gateway so that "what the gateway costs" splits into what Node's HTTP stack costs on
 * this machine and what the gateway adds on top.
 *
 *   PORT=0 UPSTREAM=http://127.0.0.1:8080 node loadtest/bare-proxy.ts
 */
import { Agent, createServer, request } from 'node:http';

const upstream = new URL(process.env.UPSTREAM ?? 'http://127.0.0.1:8080');
const agent = new Agent({ keepAlive: true, maxSockets: 2048, scheduling: 'lifo' });

const server = createServer((req, res) => {
  if (req.url === '/readyz') {
    res.end('ok');
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
    },
  );
  outgoing.on('error', () => {
    if (!res.headersSent) res.writeHead(502).end();
    else res.destroy();
  });
  req.pipe(outgoing);
});
server.keepAliveTimeout = 65_000;
server.listen(Number(process.env.PORT ?? 0), process.env.HOST ?? '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
