/**
 * The routing stage wired from its parts: the live store over the shared store and this instance's
 * fallback, the lease keeper, health, client quotas and the dispatcher. One wiring for the gateway
 * (app.ts) and for the tests that drive the dispatcher directly.
 */
import type { GatewaySettings } from '../../shared/config/schema.ts';
import { MemoryStore } from '../../shared/store/memory-store.ts';
import type { Store } from '../../shared/store/types.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { CurrentPools } from '../pools.ts';
import { UpstreamCredentials } from '../upstream/credentials.ts';
import { Forwarder } from '../upstream/forwarder.ts';
import { ClientQuotas } from './client-quota.ts';
import { Dispatcher } from './dispatcher.ts';
import { Health } from './health.ts';
import { LeaseKeeper } from './lease-keeper.ts';
import { Leasing } from './leasing.ts';
import { LiveStore } from './live-store.ts';
import { admissionWindowMs } from './window.ts';

export interface Routing {
  dispatcher: Dispatcher;
  stores: LiveStore;
  keeper: LeaseKeeper;
  health: Health;
  /**
   * Stops renewals and breakers, hands back any lease still held (a request that did not end in time),
   * closes upstream sockets and the fallback store (not the shared store: its owner closes it). Called
   * once the listener has closed, so draining requests keep their leases renewed.
   */
  close(): Promise<void>;
}

/**
 * `credentials`: the deployments' keys and Entra ID tokens (app.ts); keys only when absent. `config`:
 * the config in force, which a reload swaps (app.ts); absent, the pools never change.
 */
export function createRouting(
  store: Store,
  settings: GatewaySettings,
  metrics: Metrics,
  logger: Logger,
  credentials: UpstreamCredentials = UpstreamCredentials.keysOnly(logger),
  config?: CurrentPools,
): Routing {
  const fallback = new MemoryStore({ windowMs: admissionWindowMs(settings.windowMs) });
  const stores = new LiveStore(store, fallback, metrics, logger);
  const keeper = new LeaseKeeper(stores, settings.leaseMs, logger);
  const health = new Health(stores, settings, logger, metrics, config);
  const forwarder = new Forwarder(settings.upstreamMaxSockets);
  metrics.upstreamSockets = () => forwarder.sockets();
  const dispatcher = new Dispatcher({
    settings,
    leasing: new Leasing(stores, keeper, settings, logger),
    quotas: new ClientQuotas(stores, logger),
    forwarder,
    credentials,
    health,
    metrics,
    logger,
  });
  return {
    dispatcher,
    stores,
    keeper,
    health,
    async close() {
      keeper.close();
      await keeper.releaseAll();
      health.close();
      forwarder.close();
      await stores.close();
    },
  };
}
