/**
 * Request-cost estimation for admission to a deployment's token window.
 * See estimate-request.ts for how cost is bounded on the request path.
 */
export { encodingForModel, type Encoding } from './encoding-for-model.ts';
export type { Operation } from './prompt-content.ts';
export { estimateRequest, DEFAULT_EXACT_UP_TO_CHARS, type Estimate, type EstimateOptions } from './estimate-request.ts';
export { countTokens, warmUpTokenizers } from './tokenizers.ts';
