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
  /**
   * Stops renewals and breakers, closes upstream sockets and the fallback store (not the shared store:
   * its owner closes it). Called once the listener has closed, so draining requests keep their leases renewed.
   */
  close(): Promise<void>;
}

export function createRouting(store: Store, settings: GatewaySettings, metrics: Metrics, logger: Logger): Routing {
  const fallback = new MemoryStore({ windowMs: admissionWindowMs(settings.windowMs) });
  const stores = new LiveStore(store, fallback, metrics, logger);
  const keeper = new LeaseKeeper(stores, settings.leaseMs, logger);
  const health = new Health(stores, settings, logger, metrics);
  const forwarder = new Forwarder();
  const dispatcher = new Dispatcher({
    settings,
    leasing: new Leasing(stores, keeper, settings, logger),
    quotas: new ClientQuotas(stores, logger),
    forwarder,
    health,
    metrics,
    logger,
  });
  return {
    dispatcher,
    stores,
    keeper,
    async close() {
      keeper.close();
      health.close();
      forwarder.close();
      await stores.close();
    },
  };
}
