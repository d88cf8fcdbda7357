/**
 * Which operations a deployment's model does, as Azure decides it from the model alone: an
 * embeddings model (`text-embedding-*`) does embeddings only, and embeddings need one. Anything
 * else answers Azure's 400 `OperationNotSupported`, whatever the body says.
 * Not simulated: Azure also refuses `completions` on chat-only models (gpt-4o, gpt-35-turbo 0613…);
 * here every model that is not an embeddings model completes.
 */
import { operationNotSupported, type ErrorReply } from './errors.ts';
import type { Operation } from './requests.ts';

const EMBEDDINGS_MODEL = /^text-embedding-/;

export function isEmbeddingsModel(model: string): boolean {
  return EMBEDDINGS_MODEL.test(model);
}

/** Azure's refusal of `operation` on a deployment of `model`, or null when the model does it. */
export function operationRefusal(operation: Operation, model: string): ErrorReply | null {
  const embeddingsModel = isEmbeddingsModel(model);
  if (operation === 'embeddings') return embeddingsModel ? null : operationNotSupported('embeddings', model);
  if (!embeddingsModel) return null;
  switch (operation) {
    case 'chat/completions':
      return operationNotSupported('chatCompletion', model);
    case 'completions':
      return operationNotSupported('completion', model);
    case 'responses':
      return operationNotSupported('responses', model);
  }
}
