/** The config's pools as the request path uses them: lookups by name and id, and the store's view of each. */
import type { DeploymentConfig, GatewayConfig, PoolConfig } from '../shared/config/schema.ts';
import type { PoolLayout } from '../shared/store/types.ts';
import { encodingForModel, type Encoding } from '../shared/tokens/index.ts';

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
