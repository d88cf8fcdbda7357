/** The config's pools as the request path uses them: lookups by name and id, and the store's view of each. */
import type { DeploymentConfig, GatewayConfig, PoolConfig } from '../shared/config/schema.ts';
import type { PoolLayout } from '../shared/store/types.ts';
import { encodingForModel, type Encoding } from '../shared/tokens/index.ts';
import { resourceTagOf } from './resource-ids.ts';

export interface Pool {
  name: string;
  config: PoolConfig;
  layout: PoolLayout;
  deployments: ReadonlyMap<string, Deployment>;
  /** Tokenizer of the arrival estimate. */
  encoding: Encoding;
}

export interface Deployment {
  pool: string;
  config: DeploymentConfig;
  /** Origin of the endpoint; the path is built per request. */
  origin: URL;
  /** Base path under the endpoint (usually empty). */
  basePath: string;
  /** `pool/id`: names the destination in metrics, logs and breakers. */
  key: string;
  /** The Azure resource the endpoint names (resource-ids.ts): state such as stored responses lives there. */
  resourceTag: string;
}

/**
 * The pools in force now, through the one holder a config reload swaps (gateway/live-config.ts):
 * what reads pools after start reads `current.pools` when it needs them, never a map captured once.
 */
export interface CurrentPools {
  readonly current: { readonly pools: ReadonlyMap<string, Pool> };
}

export function buildPools(config: GatewayConfig): ReadonlyMap<string, Pool> {
  const pools = new Map<string, Pool>();
  for (const [name, poolConfig] of Object.entries(config.pools)) {
    const deployments = new Map<string, Deployment>();
    for (const deployment of poolConfig.deployments) {
      const url = new URL(deployment.endpoint);
      deployments.set(deployment.id, {
        pool: name,
        config: deployment,
        origin: new URL(url.origin),
        basePath: url.pathname.replace(/\/+$/, ''),
        key: `${name}/${deployment.id}`,
        resourceTag: resourceTagOf(deployment.endpoint),
      });
    }
    pools.set(name, {
      name,
      config: poolConfig,
      deployments,
      encoding: encodingOfPool(name, poolConfig),
      layout: {
        name,
        strategy: poolConfig.strategy,
        deployments: poolConfig.deployments.map((d) => ({ id: d.id, priority: d.priority, weight: d.weight, tpm: d.tpm, rpm: d.rpm })),
      },
    });
  }
  return pools;
}

/** The pool's tokenizer: set in the config, else inferred from its deployments' model, else its name. */
function encodingOfPool(name: string, pool: PoolConfig): Encoding {
  if (pool.tokenizer) return pool.tokenizer;
  const model = pool.deployments.find((d) => d.model)?.model ?? name;
  return encodingForModel(model);
}

/** Which resources the config's deployments sit on, by tag (resource-ids.ts): who can serve a follow-up. */
export class ResourceDirectory {
  /** The resource's host, for messages (never a key or a path). */
  private readonly hosts = new Map<string, string>();
  /** The first pool (in config order) with a deployment on the resource: calls by id name no model, and go there. */
  private readonly firstPools = new Map<string, Pool>();

  constructor(pools: ReadonlyMap<string, Pool>) {
    for (const pool of pools.values()) {
      for (const deployment of pool.deployments.values()) {
        if (this.hosts.has(deployment.resourceTag)) continue;
        this.hosts.set(deployment.resourceTag, deployment.origin.host);
        this.firstPools.set(deployment.resourceTag, pool);
      }
    }
  }

  poolFor(tag: string): Pool | undefined {
    return this.firstPools.get(tag);
  }

  hostOf(tag: string): string | undefined {
    return this.hosts.get(tag);
  }
}
