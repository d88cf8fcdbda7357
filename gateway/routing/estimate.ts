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
