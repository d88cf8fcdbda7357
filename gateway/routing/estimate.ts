/**
 * The arrival estimate of a request's cost, reserved against the chosen deployment's token window:
 * prompt tokens by the pool's tokenizer (chat overhead rules) plus max output tokens × n. Its cost is
 * bounded by shared/tokens (exact up to a size, a calibrated character estimate above).
 */
import type { Operation } from '../../shared/operation.ts';
import { estimateRequest } from '../../shared/tokens/index.ts';
import type { Pool } from '../pools.ts';

export function estimateTokens(pool: Pool, operation: Operation, body: Record<string, unknown>): number {
  return estimateRequest(operation, body, { encoding: pool.encoding, defaultMaxTokens: pool.config.defaultMaxTokens }).total;
}

/**
 * The largest token budget a request of the pool could be admitted into, when every candidate
 * deployment has one (a deployment without a tpm takes any size); undefined otherwise. A request
 * whose estimate is above it can never be admitted: the pool's windows never hold that much.
 */
export function largestTokenBudget(pool: Pool, excluded: readonly string[] = []): number | undefined {
  let largest = 0;
  for (const deployment of pool.deployments.values()) {
    if (excluded.includes(deployment.config.id)) continue;
    if (deployment.config.tpm === undefined) return undefined;
    largest = Math.max(largest, deployment.config.tpm);
  }
  return largest || undefined;
}
