/**
 * The Responses and Conversations APIs' errors, worded as OpenAI and Azure answer them. Sources:
 * captures in public issue trackers and a 2026 conformance suite of OpenAI's direct API; [U] marks
 * wording that was not found in any capture (shared/simulator/README.md lists them).
 */
import { invalidRequest, invalidRequestWithStatus, type ErrorReply } from '../errors.ts';

/** GET, DELETE, cancel or input_items of an id this resource does not hold (or no longer does). */
export function responseNotFound(id: string): ErrorReply {
  return invalidRequestWithStatus(404, `Response with id '${id}' not found.`);
}

export function previousResponseNotFound(id: string): ErrorReply {
  return invalidRequest(`Previous response with id '${id}' not found.`, 'previous_response_id', 'previous_response_not_found');
}

/**
 * An input item naming an id this resource does not hold. Azure answers 400 (OpenAI 404); with
 * `store: false` both add the hint about persistence.
 */
export function inputItemNotFound(id: string, storeFalse: boolean): ErrorReply {
  const hint = storeFalse
    ? ' Items are not persisted when `store` is set to false. Try again with `store` set to true, or remove this item from your input.'
    : '';
  return invalidRequest(`Item with id '${id}' not found.${hint}`, 'input', null);
}

/** Encrypted reasoning another resource (or nobody) produced: "The encrypted content gAAA...DQ== could not be verified." */
export function invalidEncryptedContent(token: string): ErrorReply {
  const shown = token.length > 8 ? `${token.slice(0, 4)}...${token.slice(-4)}` : token;
  return invalidRequest(`The encrypted content ${shown} could not be verified.`, null, 'invalid_encrypted_content');
}

/** OpenAI's answer to an unknown `conversation` on responses.create and to any call by an unknown conversation id. */
export function conversationNotFound(id: string): ErrorReply {
  return invalidRequestWithStatus(404, `Conversation with id '${id}' not found.`);
}

/** [U] GET/DELETE of a conversation item the conversation does not hold. */
export function conversationItemNotFound(id: string): ErrorReply {
  return invalidRequestWithStatus(404, `Item with id '${id}' not found.`);
}

/** [U] Cancel of a response that was not created with `background: true`. */
export const CANNOT_CANCEL_SYNCHRONOUS: ErrorReply = invalidRequest('Cannot cancel a synchronous response.');

/** [U] `background: true` with `store: false`. */
export const BACKGROUND_REQUIRES_STORE: ErrorReply = invalidRequest('Background mode requires store=true.', 'store');

export const CONVERSATION_WITH_PREVIOUS_RESPONSE: ErrorReply = invalidRequest(
  "Mutually exclusive parameters: ''. Ensure you are only providing one of: 'pre..._id' or 'conversation'.",
  null,
  'mutually_exclusive_parameters',
);

export const MESSAGES_MOVED_TO_INPUT: ErrorReply = invalidRequest(
  "Unsupported parameter: 'messages'. In the Responses API, this parameter has moved to 'input'. Try again with the new parameter. See the API documentation for more information: https://platform.openai.com/docs/api-reference/responses/create.",
  null,
  'unsupported_parameter',
);

export const INPUT_REQUIRED: ErrorReply = invalidRequest(
  `One of "input" or "previous_response_id" or 'prompt' or 'conversation' must be provided.`,
  null,
  'missing_required_parameter',
);

/**
 * Azure before the Responses API (a dated api-version before 2025-03-01-preview) knows no such path:
 * `{"error":{"message":"Invalid URL (POST /v1/responses)","type":"invalid_request_error",...}}` (404).
 */
export function invalidUrl(method: string, path: string): ErrorReply {
  return invalidRequestWithStatus(404, `Invalid URL (${method} ${path})`);
}
