/**
 * The config in force, swapped whole by a reload (SIGHUP, POST /admin/reload). A proxied request
 * takes the snapshot that is current when it is prepared and keeps it to its end (its pool and
 * deployments, its client): a reload never changes a request in flight, and a deployment the new
 * config removed serves the requests already on it to their end. What reads the config later (the
 * ops and admin routes, the breakers' decisions in routing/health.ts) reads `current` when it needs
 * it, never a map captured at start.
 *
 * The gateway settings are one object (`settings`) for the instance's life, in every snapshot. A
 * reload writes into it those read afresh where they are used (LIVE_SETTINGS: per request, per
 * attempt, at shutdown); the others are bound when the instance starts (the listener's timeouts
 * and connection limit, the lease length and its renewal timer, the usage window, the breakers, the
 * outlier detector, the hidden headers) and are reported as needing a restart, keeping their old
 * values until then.
 *
 * The store is not touched: a removed deployment's state in Redis (its leases, window, cooldown,
 * circuit) is left to expire by its own TTLs, and stays right for instances still on the old config.
 */
import { isDeepStrictEqual } from 'node:util';
import { ConfigError } from '../shared/config/load.ts';
import type { GatewayConfig, GatewaySettings } from '../shared/config/schema.ts';
import { warmUpTokenizers } from '../shared/tokens/index.ts';
import { ClientAuth } from './http/auth.ts';
import type { Logger } from './logger.ts';
import { buildPools, ResourceDirectory, type Deployment, type Pool } from './pools.ts';

export interface ConfigSnapshot {
  /** The config as loaded; its `gateway` section is the settings in force (`settings`). */
  readonly config: GatewayConfig;
  /** The gateway settings in force: the same object in every snapshot (see above). */
  readonly settings: GatewaySettings;
  readonly pools: ReadonlyMap<string, Pool>;
  readonly resources: ResourceDirectory;
  readonly auth: ClientAuth;
}

/**
 * The gateway settings a reload applies at once. Each is read where it is used, each time: the body
 * limit per request, the attempt limit, deadline and timeouts per request or attempt, the cooldowns
 * per 429, the shutdown timings at shutdown. The client timeouts (headers, body, request) are bound
 * at listen and must keep their order, so they are not among them.
 */
export const LIVE_SETTINGS = [
  'maxBodyBytes',
  'maxAttempts',
  'deadlineMs',
  'upstreamTimeoutMs',
  'streamIdleTimeoutMs',
  'defaultCooldownMs',
  'quotaExhaustedAfterMs',
  'shutdownDelayMs',
  'shutdownGraceMs',
] as const satisfies readonly (keyof GatewaySettings)[];

const LIVE = new Set<string>(LIVE_SETTINGS);

export interface Changes {
  added: string[];
  removed: string[];
  changed: string[];
}

/** What a reload changed. Deployments as `pool/id`, clients by name; never a key. */
export interface ConfigChanges {
  /** Pools added, removed, or whose own settings (strategy, tokenizer, defaultMaxTokens, maxWaitMs) changed. */
  pools: Changes;
  /** Deployments added, removed, or changed (budget, priority, weight, endpoint, key, api-version…). */
  deployments: Changes;
  clients: Changes;
  /** Gateway settings (`gateway.…`) changed and in force now. */
  applied: string[];
  /** Gateway settings changed in the file that keep their old value until the instance restarts. */
  needsRestart: string[];
}

export type ReloadOutcome =
  | ({ status: 'reloaded'; changed: boolean } & ConfigChanges)
  | { status: 'rejected'; message: string; problems: string[] }
  | { status: 'unavailable'; message: string };

/** Who asked for a reload, for its log line. */
export interface ReloadTrigger {
  trigger: string;
  who?: string;
  from?: string;
  requestId?: unknown;
}

type SwapListener = (next: ConfigSnapshot, previous: ConfigSnapshot) => void;

export class LiveConfig {
  readonly settings: GatewaySettings;
  private snapshot: ConfigSnapshot;
  private readonly listeners: SwapListener[] = [];

  constructor(config: GatewayConfig) {
    this.settings = { ...config.gateway };
    this.snapshot = this.build({ ...config, gateway: this.settings });
  }

  /** The config in force now. Take it once and keep it for what belongs together (one request, one answer). */
  get current(): ConfigSnapshot {
    return this.snapshot;
  }

  /** Every deployment of the config in force. */
  deployments(): Deployment[] {
    return allDeployments(this.snapshot.pools);
  }

  /** Called after each swap, with the new and the old snapshot (breakers of removed deployments, token sources). */
  onSwap(listener: SwapListener): void {
    this.listeners.push(listener);
  }

  /**
   * Puts a validated config in force, whole: everything is built first, then the live settings are
   * written and the snapshot replaced in one step, so no request sees half of it.
   */
  swap(next: GatewayConfig): ConfigChanges {
    const previous = this.snapshot;
    const changes = diffConfigs(previous.config, next);
    const built = this.build({ ...next, gateway: this.settings });
    const settings = this.settings as unknown as Record<string, unknown>;
    for (const key of LIVE_SETTINGS) settings[key] = next.gateway[key];
    this.snapshot = built;
    for (const listener of this.listeners) listener(built, previous);
    return changes;
  }

  private build(config: GatewayConfig): ConfigSnapshot {
    const pools = buildPools(config);
    // Building a tokenizer blocks for a few hundred ms: pay it now, not on a client's request.
    warmUpTokenizers([...new Set([...pools.values()].map((pool) => pool.encoding))]);
    return { config, settings: this.settings, pools, resources: new ResourceDirectory(pools), auth: new ClientAuth(config.clients) };
  }
}

export function allDeployments(pools: ReadonlyMap<string, Pool>): Deployment[] {
  return [...pools.values()].flatMap((pool) => [...pool.deployments.values()]);
}

/**
 * Re-reads the config with `load` (which throws ConfigError for a file that does not validate) and
 * puts it in force. One log line either way: what changed and what needs a restart, or the file's
 * problems, one line each, as at start-up (the old config keeps serving).
 */
export function reloadConfig(
  live: LiveConfig,
  load: (() => GatewayConfig) | undefined,
  logger: Logger,
  trigger: ReloadTrigger,
): ReloadOutcome {
  if (!load) {
    const message = 'no GATEWAY_CONFIG: the built-in demo has no config file to reload';
    logger.warn('config reload: nothing to reload', { ...trigger, reason: message });
    return { status: 'unavailable', message };
  }
  let next: GatewayConfig;
  try {
    next = load();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    logger.error('config reload rejected: the old config keeps serving', { ...trigger, problems: error.problems, error: error.message });
    return { status: 'rejected', message: error.message, problems: error.problems };
  }
  const changes = live.swap(next);
  const changed = [changes.pools, changes.deployments, changes.clients].some(
    (c) => c.added.length + c.removed.length + c.changed.length > 0,
  );
  const outcome: ReloadOutcome = { status: 'reloaded', changed: changed || changes.applied.length > 0, ...changes };
  const fields = { ...trigger, ...outcome };
  if (changes.needsRestart.length > 0) logger.warn('config reloaded; some gateway settings need a restart', fields);
  else logger.info('config reloaded', fields);
  if (!live.current.auth.enabled) logger.warn('no clients configured: the gateway accepts requests without a key');
  return outcome;
}

function changesOf<T>(before: ReadonlyMap<string, T>, after: ReadonlyMap<string, T>): Changes {
  return {
    added: [...after.keys()].filter((key) => !before.has(key)),
    removed: [...before.keys()].filter((key) => !after.has(key)),
    changed: [...after].filter(([key, value]) => before.has(key) && !isDeepStrictEqual(before.get(key), value)).map(([key]) => key),
  };
}

/** What differs between the config in force and the next one. */
export function diffConfigs(current: GatewayConfig, next: GatewayConfig): ConfigChanges {
  const poolSettings = (config: GatewayConfig) =>
    new Map(Object.entries(config.pools).map(([name, { deployments: _, ...own }]) => [name, own]));
  const deployments = (config: GatewayConfig) =>
    new Map(Object.entries(config.pools).flatMap(([name, pool]) => pool.deployments.map((d) => [`${name}/${d.id}`, d] as const)));
  const clients = (config: GatewayConfig) => new Map((config.clients ?? []).map((client) => [client.name, client]));
  const settings = changesOf(flatten(current.gateway), flatten(next.gateway)).changed;
  return {
    pools: changesOf(poolSettings(current), poolSettings(next)),
    deployments: changesOf(deployments(current), deployments(next)),
    clients: changesOf(clients(current), clients(next)),
    applied: settings.filter((path) => LIVE.has(path.split('.')[1]!)),
    needsRestart: settings.filter((path) => !LIVE.has(path.split('.')[1]!)),
  };
}

/** The gateway section as `gateway.key` (`gateway.breaker.resetTimeoutMs` for the nested ones) → value. */
function flatten(settings: GatewaySettings): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [key, value] of Object.entries(settings)) {
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      for (const [inner, leaf] of Object.entries(value)) out.set(`gateway.${key}.${inner}`, leaf);
    } else out.set(`gateway.${key}`, value);
  }
  return out;
}
