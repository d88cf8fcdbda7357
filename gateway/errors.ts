/**
 * Azure-shaped error responses. Every error a client sees goes through here, so none carries a stack
 * trace, an upstream key or an internal URL.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http';

export interface AzureError {
  status: number;
  code: string;
  message: string;
  headers?: Record<string, string>;
  /** Problems behind the error, one object each (a batch file's lines), sent as `details`. */
  details?: readonly Record<string, unknown>[];
}

/** The code of the gateway error a response carries, for its log line and metrics (see refusalOf). */
const SENT_ERROR = Symbol('spillway.sentError');
type WithSentError = ServerResponse & { [SENT_ERROR]?: string };

/** The code of the gateway error sent on this response, if one was. */
export function sentErrorCode(res: ServerResponse): string | undefined {
  return (res as WithSentError)[SENT_ERROR];
}

export function sendError(res: ServerResponse, error: AzureError): void {
  (res as WithSentError)[SENT_ERROR] = error.code;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  for (const [name, value] of Object.entries(error.headers ?? {})) res.setHeader(name, value);
  res.statusCode = error.status;
  res.setHeader('content-type', 'application/json; charset=utf-8');
  const details = error.details ? { details: error.details } : {};
  res.end(JSON.stringify({ error: { code: error.code, message: error.message, ...details } }));
}

/**
 * The same answer as raw HTTP/1.1 bytes, with `connection: close`, for a connection Node's parser
 * gave up on (no ServerResponse exists): a header timeout, headers too large, a malformed request.
 */
export function rawErrorResponse(error: AzureError, headers: Record<string, string> = {}): Buffer {
  const body = JSON.stringify({ error: { code: error.code, message: error.message } });
  const lines = [`HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? 'Error'}`];
  for (const [name, value] of Object.entries({ ...error.headers, ...headers })) lines.push(`${name}: ${value}`);
  lines.push('content-type: application/json; charset=utf-8', `content-length: ${Buffer.byteLength(body)}`, 'connection: close');
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n${body}`);
}

const ARRIVALS = {
  body: 'The request body did not arrive',
  headers: 'The request headers did not arrive',
  request: 'The request did not arrive whole',
};

export const errors = {
  notFound: (): AzureError => ({ status: 404, code: '404', message: 'Resource not found' }),
  unknownPool: (pool: string): AzureError => ({
    status: 404,
    code: 'DeploymentNotFound',
    message: `The API deployment ${JSON.stringify(pool)} does not exist on this gateway.`,
  }),
  /** An id of stored state (a response, item, conversation) that no configured resource holds. */
  unknownState: (id: string): AzureError => ({
    status: 404,
    code: 'not_found',
    message: `No deployment of this gateway holds ${JSON.stringify(id.slice(0, 256))}: the id was not issued by this gateway, or the Azure resource that holds it is no longer configured.`,
  }),
  unauthorized: (): AzureError => ({
    status: 401,
    code: '401',
    message: 'Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.',
  }),
  badRequest: (message: string): AzureError => ({ status: 400, code: 'invalid_request_error', message }),
  /** A request no deployment's token window can ever hold: a 429 would ask the client to retry forever. */
  overBudget: (pool: string, estimate: number, largest: number): AzureError => ({
    status: 400,
    code: 'TokensExceedBudget',
    message: `The request needs about ${estimate} tokens (its prompt plus max_tokens), more than the largest token budget of pool ${pool} (${largest} tokens per minute): it can never be admitted. Lower max_tokens or shorten the prompt.`,
  }),
  tooLarge: (limit: number): AzureError => ({
    status: 413,
    code: 'RequestEntityTooLarge',
    message: `The request body exceeds the gateway's limit of ${limit} bytes.`,
  }),
  /** A 408: `what` (the request body, its headers, the whole request) did not arrive in time. */
  arrivalTimeout: (what: 'body' | 'headers' | 'request', limitMs: number): AzureError => ({
    status: 408,
    code: 'RequestTimeout',
    message: `${ARRIVALS[what]} within the gateway's limit of ${limitMs} ms.`,
  }),
  headersTooLarge: (limit: number): AzureError => ({
    status: 431,
    code: 'RequestHeaderFieldsTooLarge',
    message: `The request headers exceed the gateway's limit of ${limit} bytes.`,
  }),
  malformedRequest: (): AzureError => ({
    status: 400,
    code: 'invalid_request_error',
    message: 'The request is not valid HTTP/1.1.',
  }),
  unsupportedEncoding: (): AzureError => ({
    status: 415,
    code: 'UnsupportedMediaType',
    message: 'The request body has a Content-Encoding the gateway cannot decode; send it plain, gzip, deflate or br.',
  }),
  saturated: (pool: string, retryAfterMs: number, detail: string): AzureError => {
    const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
    return {
      status: 429,
      code: '429',
      message: `Every deployment of ${pool} is ${detail}. Please retry after ${seconds} second${seconds === 1 ? '' : 's'}.`,
      headers: { 'retry-after': String(seconds), 'retry-after-ms': String(Math.max(1, Math.ceil(retryAfterMs))) },
    };
  },
  clientQuota: (client: string, exhausted: 'tokens' | 'requests', retryAfterMs: number): AzureError => {
    const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
    return {
      status: 429,
      code: '429',
      message: `Client ${client} has exceeded its ${exhausted === 'tokens' ? 'token' : 'request'} rate limit on this gateway. Please retry after ${seconds} second${seconds === 1 ? '' : 's'}.`,
      headers: { 'retry-after': String(seconds), 'retry-after-ms': String(Math.max(1, Math.ceil(retryAfterMs))) },
    };
  },
  upstreamUnreachable: (): AzureError => ({
    status: 502,
    code: 'BadGateway',
    message: 'No deployment could be reached; the gateway gave up after the allowed retries.',
  }),
  upstreamTimeout: (): AzureError => ({
    status: 504,
    code: 'GatewayTimeout',
    message: 'No deployment answered in time; the gateway gave up after the allowed retries.',
  }),
  unavailable: (message: string): AzureError => ({ status: 503, code: 'ServiceUnavailable', message }),
  /** The Batch API keeps files and results in Redis: the in-memory store has nowhere to keep them. */
  batchApiNeedsRedis: (): AzureError => ({
    status: 503,
    code: 'ServiceUnavailable',
    message: 'The Batch API needs Redis: set REDIS_URL for this gateway.',
  }),
  fileNotFound: (id: string): AzureError => ({ status: 404, code: 'not_found', message: `No such File object: ${id.slice(0, 100)}` }),
  batchNotFound: (id: string): AzureError => ({ status: 404, code: 'not_found', message: `No batch found with id '${id.slice(0, 100)}'.` }),
  fileTooLarge: (limit: number): AzureError => ({
    status: 413,
    code: 'file_too_large',
    message: `The file exceeds the gateway's limit of ${limit} bytes for batch input files.`,
  }),
  /** A batch input file with problems: the first ones, each with its line (1-based), in the message and in `details`. */
  invalidBatchFile: (problems: readonly { line: number | null; code: string; message: string }[], count: number): AzureError => {
    const shown = problems.map((p) => (p.line === null ? p.message : `line ${p.line}: ${p.message}`));
    const more = count > problems.length ? ` (the first ${problems.length} of ${count} shown)` : '';
    return {
      status: 400,
      code: 'invalid_batch_file',
      message: `The file is not a valid batch input file: ${count} problem${count === 1 ? '' : 's'}${more}; nothing was stored. ${shown.join('; ')}`,
      details: problems.map((p) => ({ line: p.line, code: p.code, message: p.message })),
    };
  },
  /**
   * Files and results fill the Batch API's byte budget: nothing is evicted to make room. Not retried by
   * the openai SDK (x-should-retry): room comes back only when files are deleted or expire.
   */
  batchStoreFull: (usedBytes: number, storeBytes: number, neededBytes: number): AzureError => ({
    status: 507,
    code: 'insufficient_storage',
    message: `The gateway's Batch API store is full: ${usedBytes} of ${storeBytes} bytes are held by files and results, and this upload needs up to ${neededBytes}. Delete files you no longer need (DELETE /files/{file_id}) or wait until older ones expire, then upload again.`,
    headers: { 'x-should-retry': 'false' },
  }),
  /** A request that conflicts with the object's state (not retried by the openai SDK, which retries 409s by default). */
  conflict: (message: string): AzureError => ({ status: 409, code: 'conflict', message, headers: { 'x-should-retry': 'false' } }),
  internal: (): AzureError => ({ status: 500, code: 'InternalServerError', message: 'The gateway failed to process the request.' }),
};
