/**
 * Azure OpenAI error bodies, worded as Azure sends them (see the reference file, sections 1-3).
 * Each builder returns the status and the serialized body; the server adds the headers.
 */

export interface ErrorReply {
  status: number;
  body: string;
  /** Set on 429s (and status faults given a delay): sent as retry-after and retry-after-ms. */
  retryAfterMs?: number;
}

export type OperationName =
  | 'ChatCompletions_Create'
  | 'Completions_Create'
  | 'Embeddings_Create'
  // The Responses and Conversations operations, named in Azure's style (never captured in a 429).
  | 'Responses_Create'
  | 'Responses_Get'
  | 'Responses_Delete'
  | 'Responses_Cancel'
  | 'Responses_ListInputItems'
  | 'Conversations_Create'
  | 'Conversations_Get'
  | 'Conversations_Update'
  | 'Conversations_Delete'
  | 'ConversationItems_Create'
  | 'ConversationItems_List'
  | 'ConversationItems_Get'
  | 'ConversationItems_Delete';

function reply(status: number, error: Record<string, unknown>, retryAfterMs?: number): ErrorReply {
  const body = JSON.stringify({ error });
  return retryAfterMs === undefined ? { status, body } : { status, body, retryAfterMs };
}

/** Wrong path, or missing/unknown api-version on a classic route. */
export const RESOURCE_NOT_FOUND: ErrorReply = reply(404, { code: '404', message: 'Resource not found' });

export const DEPLOYMENT_NOT_FOUND: ErrorReply = reply(404, {
  code: 'DeploymentNotFound',
  message:
    'The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.',
});

export const UNAUTHORIZED: ErrorReply = reply(401, {
  code: '401',
  message:
    'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.',
});

/**
 * Azure's 400 for an operation the deployment's model does not do: embeddings on a chat model, chat or
 * completions on an embeddings model. Captured: "The embeddings operation does not work with the
 * specified model, gpt-35-turbo." (OpenHands/OpenHands GH#1003), "The chatCompletion operation …,
 * text-embedding-ada-002." (microsoft/AI-Red-Teaming-Playground-Labs GH#18), "The completion
 * operation …, text-embedding-ada-002." (MicrosoftDocs/azure-docs GH#112023). The model is named
 * without its version. [U] for `responses`: that wording was never captured.
 */
export function operationNotSupported(operation: 'embeddings' | 'chatCompletion' | 'completion' | 'responses', model: string): ErrorReply {
  return reply(400, {
    code: 'OperationNotSupported',
    message:
      `The ${operation} operation does not work with the specified model, ${modelFamily(model)}. Please choose different model and try again. ` +
      'You can learn more about which models can be used with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993.',
  });
}

/** OpenAI-style validation error, which Azure passes through for request bodies. */
export function invalidRequest(message: string, param: string | null = null, code: string | null = null): ErrorReply {
  return reply(400, { message, type: 'invalid_request_error', param, code });
}

/** An `invalid_request_error` with another status (the Responses API's 404s for unknown ids). */
export function invalidRequestWithStatus(
  status: number,
  message: string,
  param: string | null = null,
  code: string | null = null,
): ErrorReply {
  return reply(status, { message, type: 'invalid_request_error', param, code });
}

export const INVALID_JSON: ErrorReply = invalidRequest(
  "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
);

export interface RateLimitContext {
  deployment: string;
  model: string;
  region: string;
  limit: 'token' | 'call';
  operation: OperationName;
  apiVersion: string;
  retryAfterMs: number;
}

/** The current (2025+) RateLimitReached wording. */
export function rateLimitReached(context: RateLimitContext): ErrorReply {
  const seconds = retryAfterSeconds(context.retryAfterMs);
  return reply(
    429,
    {
      code: 'RateLimitReached',
      message:
        `Your requests to ${context.deployment} for ${modelFamily(context.model)} in ${context.region} have exceeded the ` +
        `${context.limit} rate limit for your current OpenAI S0 pricing tier. This request was for ${context.operation} ` +
        `under Azure OpenAI API version ${context.apiVersion}. Please retry after ${seconds} seconds. ` +
        'To increase your default rate limit, visit: https://aka.ms/oai/quotaincrease.',
    },
    context.retryAfterMs,
  );
}

/** Bodies of injected status faults (429 goes through rateLimitReached instead). */
export function faultReply(status: 500 | 502 | 503 | 504 | 408, requestId: string, retryAfterMs?: number): ErrorReply {
  switch (status) {
    case 500:
      return reply(
        500,
        {
          message: `The server had an error processing your request. Sorry about that! You can retry your request, or contact us through an Azure support request at: https://go.microsoft.com/fwlink/?linkid=2213926 if you keep seeing this error. (Please include the request ID ${requestId} in your email.)`,
          type: 'server_error',
          param: null,
          code: null,
        },
        retryAfterMs,
      );
    case 408:
      return reply(408, { code: 'Timeout', message: 'The operation was timeout.' }, retryAfterMs);
    // 502/503/504 bodies were never captured (reference section 3); these follow Azure's envelope.
    case 502:
      return reply(502, { code: 'BadGateway', message: 'The service received an invalid response from an upstream server.' }, retryAfterMs);
    case 503:
      return reply(
        503,
        { code: 'ServiceUnavailable', message: 'The service is temporarily unable to process your request. Please try again later.' },
        retryAfterMs,
      );
    case 504:
      return reply(504, { code: 'GatewayTimeout', message: 'The operation did not complete within the allowed time.' }, retryAfterMs);
  }
}

/** `retry-after` is whole seconds, rounded up so that honouring it is always enough. */
export function retryAfterSeconds(retryAfterMs: number): number {
  return Math.max(1, Math.ceil(retryAfterMs / 1000));
}

/** 'gpt-4o-2024-08-06' -> 'gpt-4o': Azure's messages name the model without its version. */
function modelFamily(model: string): string {
  return model.replace(/-\d{4}-\d{2}-\d{2}$/, '');
}
