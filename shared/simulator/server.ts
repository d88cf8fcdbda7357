/**
 * The HTTP server: plain node:http (the hot path runs at thousands of requests per second),
 * dispatching /_sim/* to the control API and everything else to the Azure surface.
 */
import { createServer, type Server } from 'node:http';
import { handleApiRequest, type ApiContext } from './api-handler.ts';
import { CONTROL_PREFIX, handleControlRequest } from './control.ts';

type Controls = Parameters<typeof handleControlRequest>[0];

/** Longer than any client's idle timeout, so the client, not the simulator, ends idle connections. */
const KEEP_ALIVE_TIMEOUT_MS = 120_000;

export function createSimulatorServer(api: ApiContext, controls: Controls): Server {
  const server = createServer((req, res) => {
    // Writes racing a client that left must never crash the process.
    res.on('error', () => {});
    const handling = req.url?.startsWith(CONTROL_PREFIX) ? handleControlRequest(controls, req, res) : handleApiRequest(api, req, res);
    handling.catch((error: unknown) => {
      // A simulator bug: answer like Azure's 500 when still possible, and say so on stderr.
      console.error('simulator: request handler failed', error);
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            error: { message: 'The server had an error processing your request.', type: 'server_error', param: null, code: null },
          }),
        );
      } else {
        res.destroy();
      }
    });
  });
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.on('clientError', (_error, socket) => socket.destroy());
  return server;
}
