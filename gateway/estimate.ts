/**
 * The arrival estimate of a request's cost, reserved against the chosen deployment's token window:
 * prompt tokens by the pool's tokenizer (chat overhead rules) plus max output tokens × n. Its cost is
 * bounded by shared/tokens (exact up to a size, a calibrated character estimate above).
 */
import { encodingForModel, estimateRequest, type Encoding } from '../shared/tokens/index.ts';
import type { PoolConfig } from '../shared/config/schema.ts';
import type { Operation } from './request.ts';

const OPERATIONS = { 'chat/completions': 'chat', completions: 'completions', embeddings: 'embeddings' } as const;

/** The pool's tokenizer: set in the config, else inferred from its deployments' model, else its name. */
export function encodingOfPool(name: string, pool: PoolConfig): Encoding {
  if (pool.tokenizer) return pool.tokenizer;
  const model = pool.deployments.find((d) => d.model)?.model ?? name;
  return encodingForModel(model);
}

export function estimateTokens(encoding: Encoding, pool: PoolConfig, operation: Operation, body: Record<string, unknown>): number {
  return estimateRequest(OPERATIONS[operation], body, { encoding, defaultMaxTokens: pool.defaultMaxTokens }).total;
}
