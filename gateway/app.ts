/**
 * Assembles one gateway instance from its stages: http/ (listener, auth, body, ops routes),
 * routing/ (the attempt loop and its collaborators) and upstream/ (the attempt itself). Everything is
 * passed in, so tests run several instances in one process. docs/architecture.md walks the stages.
 */
import type { Server } from 'node:http';
import type express from 'express';
import type { GatewayConfig } from '../shared/config/schema.ts';
import type { Store } from '../shared/store/types.ts';
import { warmUpTokenizers } from '../shared/tokens/index.ts';
import { errors, sendError } from './errors.ts';
import { ClientAuth } from './http/auth.ts';
import { Listener } from './http/listener.ts';
import { createOpsApp } from './http/ops-routes.ts';
import { prepareRequest } from './http/prepare-request.ts';
import { assignRequestId } from './http/request-id.ts';
import type { Logger } from './logger.ts';
import { Metrics } from './metrics.ts';
import { buildPools, ResourceDirectory } from './pools.ts';
import { createRouting } from './routing/assemble.ts';

export interface GatewayOptions {
  config: GatewayConfig;
  store: Store;
  logger: Logger;
  /** Guards /admin/*; absent → the admin routes answer 404. */
  adminApiKey?: string;
  /** Process-wide default metrics (CPU, memory); off when several instances share a process. */
  defaultMetrics?: boolean;
}

export interface Gateway {
  app: express.Express;
  listen(port: number, host?: string): Promise<{ server: Server; url: string }>;
  close(): Promise<void>;
}

export function createGateway(options: GatewayOptions): Gateway {
  const { config, logger } = options;
  const settings = config.gateway;
  const pools = buildPools(config);
  const resources = new ResourceDirectory(pools);
  // Building a tokenizer blocks for a few hundred ms: pay it at start, not on a client's request.
  warmUpTokenizers([...new Set([...pools.values()].map((pool) => pool.encoding))]);
  const metrics = new Metrics(options.defaultMetrics ?? false);
  const auth = new ClientAuth(config.clients);
  if (!auth.enabled) logger.warn('no clients configured: the gateway accepts requests without a key');

  const { dispatcher, stores, close: closeRouting } = createRouting(options.store, settings, metrics, logger);

  const app = createOpsApp({ pools, stores, metrics, logger, auth, adminApiKey: options.adminApiKey });
  const listener = new Listener(
    async (req, res, route) => {
      const requestId = assignRequestId(req, res);
      if (route === 'bad-path') return sendError(res, errors.badRequest('The request path could not be decoded.'));
      const request = await prepareRequest(req, res, route, requestId, { settings, auth, pools, resources });
      if (request) await dispatcher.handle(req, res, request);
    },
    (req, res) => void app(req, res),
    logger,
    { settings, metrics },
  );

  return {
    app,
    listen: (port: number, host = '127.0.0.1') => listener.listen(port, host),
    async close() {
      await listener.close();
      await closeRouting();
    },
  };
}
