/**
 * The inference operations Spillway proxies, named by their path suffix, as Azure and OpenAI name
 * them in URLs. One type for the gateway, the token estimator and the simulator, so no table maps
 * one naming onto another.
 */
export type Operation = 'chat/completions' | 'completions' | 'embeddings';

export const OPERATIONS: readonly Operation[] = ['chat/completions', 'completions', 'embeddings'];

export function isOperation(text: string): text is Operation {
  return (OPERATIONS as readonly string[]).includes(text);
}
