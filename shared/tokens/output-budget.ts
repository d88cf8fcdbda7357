/**
 * The output side of a request's cost: what the deployment's token window must hold for the reply.
 * Azure's admission estimate counts max_tokens × best_of (reference notes, section 2). Every one
 * of n choices can run to the limit, so n multiplies too. The Responses API has one limit,
 * max_output_tokens (reasoning tokens included), and no n.
 */
import type { Operation } from './prompt-content.ts';

/** Keeps estimates exact integers (they end up in Redis counters). */
const LARGEST_ESTIMATE = Number.MAX_SAFE_INTEGER;

export function maxOutputTokens(operation: Operation, body: unknown, defaultMaxTokens: number): number {
  if (operation === 'embeddings') return 0;
  const fields = body !== null && typeof body === 'object' ? (body as Record<string, unknown>) : {};
  if (operation === 'responses') return positiveInteger(fields.max_output_tokens) ?? positiveInteger(defaultMaxTokens) ?? 0;
  // max_completion_tokens replaces max_tokens in newer API versions (and is the only one o-series
  // models accept). A field with a nonsense value counts as absent.
  const perChoice =
    positiveInteger(fields.max_completion_tokens) ?? positiveInteger(fields.max_tokens) ?? positiveInteger(defaultMaxTokens) ?? 0;
  let choices = positiveInteger(fields.n) ?? 1;
  if (operation === 'completions') choices = Math.max(choices, positiveInteger(fields.best_of) ?? 1);
  return Math.min(perChoice * choices, LARGEST_ESTIMATE);
}

/** A count the client could mean: a finite number ≥ 1, rounded down. Anything else is undefined. */
function positiveInteger(value: unknown): number | undefined {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 1) return undefined;
  return Math.min(Math.floor(value), LARGEST_ESTIMATE);
}
