/**
 * The endpoints a batch may run, as OpenAI names them, and Azure's names of the same (`/chat/completions`:
 * Azure's batch docs and the AzureOpenAI client use them), normalised to OpenAI's.
 */
import type { Operation } from '../../../shared/operation.ts';
import type { BatchEndpoint } from '../contract.ts';

const ENDPOINTS: Record<string, BatchEndpoint> = {
  '/v1/chat/completions': '/v1/chat/completions',
  '/chat/completions': '/v1/chat/completions',
  '/v1/embeddings': '/v1/embeddings',
  '/embeddings': '/v1/embeddings',
  '/v1/responses': '/v1/responses',
  '/responses': '/v1/responses',
};

const OPERATIONS: Record<BatchEndpoint, Operation> = {
  '/v1/chat/completions': 'chat/completions',
  '/v1/embeddings': 'embeddings',
  '/v1/responses': 'responses',
};

export const ENDPOINT_NAMES = Object.keys(ENDPOINTS).filter((name) => name.startsWith('/v1/'));

/** The endpoint a line's `url` or a batch's `endpoint` names; undefined for any other text. */
export function batchEndpointOf(text: unknown): BatchEndpoint | undefined {
  return typeof text === 'string' && Object.hasOwn(ENDPOINTS, text) ? ENDPOINTS[text] : undefined;
}

/** The gateway operation an endpoint's lines are (the token estimate's kind). */
export function operationOf(endpoint: BatchEndpoint): Operation {
  return OPERATIONS[endpoint];
}
