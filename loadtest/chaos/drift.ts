/**
 * In-flight drift: what each deployment still counts as in flight once nothing is, read straight
 * from Redis (the leases ZSETs, without reaping them) and as every live gateway's admin API reports
 * it (GET /admin/pools: the store that gateway uses now, which reaps). After the load has ended and
 * the leases' leaseMs has passed, every figure should be 0: a lease still live then was renewed by
 * a gateway for a request that no longer exists, or booked by a command that ran after its caller
 * had given up.
 */
import { Redis } from 'ioredis';
import { DEFAULT_KEY_PREFIX } from '../../shared/store/constants.ts';
import { KeyLayout } from '../../shared/store/keys.ts';
import type { GatewayHandle } from '../lib/stack.ts';

/** Each read is a handful of commands on loopback; this long means Redis is not answering. */
const READ_TIMEOUT_MS = 3000;

export interface DeploymentRef {
  pool: string;
  id: string;
}

export interface DriftReading {
  /** Epoch ms of the reading. */
  at: number;
  /** Per `pool/id`: leases in Redis whose deadline is still ahead (live) and all stored (expired ones not yet reaped); null when Redis did not answer. */
  redis: Record<string, { live: number; stored: number }> | null;
  redisError?: string;
  /** Per gateway name, per `pool/id`: the in-flight count its admin API reports; null when it did not answer. */
  gateways: Record<string, Record<string, number> | null>;
}

export const refLabel = (ref: DeploymentRef) => `${ref.pool}/${ref.id}`;

async function readRedis(url: string, deployments: DeploymentRef[]): Promise<Record<string, { live: number; stored: number }>> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: READ_TIMEOUT_MS,
    commandTimeout: READ_TIMEOUT_MS,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  client.on('error', () => {}); // the awaited calls report it
  try {
    await client.connect();
    const [seconds, micros] = await client.time();
    const nowMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    const keys = new KeyLayout(DEFAULT_KEY_PREFIX);
    const out: Record<string, { live: number; stored: number }> = {};
    for (const ref of deployments) {
      const { leases } = keys.deployment(ref.pool, ref.id);
      const [stored, live] = await Promise.all([client.zcard(leases), client.zcount(leases, `(${nowMs}`, '+inf')]);
      out[refLabel(ref)] = { live, stored };
    }
    return out;
  } finally {
    client.disconnect();
  }
}

interface AdminPools {
  pools: Record<string, { deployments: { id: string; inFlight: number }[] }>;
}

async function readGateway(gateway: GatewayHandle, adminKey: string): Promise<Record<string, number> | null> {
  try {
    const response = await fetch(`${gateway.url}/admin/pools`, {
      headers: { 'api-key': adminKey },
      signal: AbortSignal.timeout(READ_TIMEOUT_MS),
    });
    if (!response.ok) {
      await response.arrayBuffer();
      return null;
    }
    const body = (await response.json()) as AdminPools;
    const out: Record<string, number> = {};
    for (const [pool, state] of Object.entries(body.pools)) for (const d of state.deployments) out[`${pool}/${d.id}`] = d.inFlight;
    return out;
  } catch {
    return null;
  }
}

/** One reading: Redis (when the run has it) and every gateway's admin view, at about the same moment. */
export async function readDrift(
  redisUrl: string | undefined,
  deployments: DeploymentRef[],
  gateways: GatewayHandle[],
  adminKey: string,
): Promise<DriftReading> {
  const at = Date.now();
  const [redis, ...views] = await Promise.allSettled([
    redisUrl ? readRedis(redisUrl, deployments) : Promise.resolve(null),
    ...gateways.map((g) => readGateway(g, adminKey)),
  ]);
  const reading: DriftReading = {
    at,
    redis: redis?.status === 'fulfilled' ? redis.value : null,
    gateways: Object.fromEntries(gateways.map((g, index) => [g.name, views[index]?.status === 'fulfilled' ? views[index].value : null])),
  };
  if (redis?.status === 'rejected') reading.redisError = redis.reason instanceof Error ? redis.reason.message : String(redis.reason);
  return reading;
}
