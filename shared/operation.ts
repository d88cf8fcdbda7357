/**
 * The inference operations Spillway proxies, named by their path suffix, as Azure and OpenAI name
 * them in URLs. One type for the gateway, the token estimator and the simulator, so no table maps
 * one naming onto another. `responses` is the Responses API's create call (`POST /responses`); its
 * calls by id and the conversations API carry no prompt and are routed by the ids they name.
 */
export type Operation = 'chat/completions' | 'completions' | 'embeddings' | 'responses';

export const OPERATIONS: readonly Operation[] = ['chat/completions', 'completions', 'embeddings', 'responses'];

export function isOperation(text: string): text is Operation {
  return (OPERATIONS as readonly string[]).includes(text);
}
