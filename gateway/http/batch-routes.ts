/**
 * The Batch API's routes, OpenAI-shaped so the unmodified openai SDK works (OpenAI client with
 * `baseURL …/openai/v1` or `…/v1`, AzureOpenAI client on `/openai/…?api-version=`):
 *   POST files (multipart, purpose batch), GET files, GET files/{id}, GET files/{id}/content, DELETE files/{id}
 *   POST batches, GET batches, GET batches/{id}, POST batches/{id}/cancel
 * and POST /openai/deployments/{name}/batches, where the AzureOpenAI client sends batches.create when
 * it was given a deployment. A client authenticates as for proxied requests and sees only its own
 * files and batches (another's are 404). The records live in Redis (gateway/background/batch-records.ts);
 * without Redis every route answers 503.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import express, { type Request, type Response } from 'express';
import type { BackgroundSettings, GatewaySettings } from '../../shared/config/schema.ts';
import type { BatchStorage } from '../background/batch-records.ts';
import type { BatchLane, BatchRecords } from '../background/contract.ts';
import { batchEndpointOf, ENDPOINT_NAMES } from '../background/records/endpoints.ts';
import { isBatchId, isFileId } from '../background/records/ids.ts';
import type { FilePurpose } from '../background/records/keys.ts';
import { BatchFileCheck } from '../background/records/line-check.ts';
import { batchObject, fileObject, listObject, type BatchRecord, type FileRecord } from '../background/records/shapes.ts';
import { errors, sendError, type AzureError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { Pool } from '../pools.ts';
import type { ClientIdentity } from '../routing/proxied-request.ts';
import type { ClientAuth } from './auth.ts';
import { closeLingering } from './lingering-close.ts';
import { MultipartError, receiveMultipart } from './multipart.ts';
import { noteClient } from './refusal-log.ts';
import { BodyError, readRequestBody } from './request-body.ts';

export interface BatchApiDeps {
  records: BatchRecords & BatchStorage;
  lane: BatchLane;
  /** The config in force, read per request (a reload swaps it). */
  config: {
    readonly current: { readonly pools: ReadonlyMap<string, Pool>; readonly auth: ClientAuth; readonly settings: GatewaySettings };
  };
  settings: BackgroundSettings;
  logger: Logger;
  metrics?: Metrics;
}

/** The three ways clients address the gateway (proxied-route.ts): OpenAI's v1, the bare v1, Azure's /openai with an api-version. */
const PREFIXES = ['/openai/v1', '/v1', '/openai'];
const paths = (suffix: string) => PREFIXES.map((prefix) => `${prefix}${suffix}`);
/** Multipart framing and the small fields around the file, on top of the file's own limit. */
const MULTIPART_OVERHEAD_BYTES = 64 * 1024;
/** POST batches carries ids, an endpoint and at most 16 metadata pairs. */
const JSON_BODY_LIMIT = 64 * 1024;
const MAX_FILENAME_CHARS = 255;
const MAX_LIST_LIMIT = 100;
/** OpenAI's metadata limits. */
const METADATA = { pairs: 16, keyChars: 64, valueChars: 512 };

type Handler = (req: Request, res: Response, client: ClientIdentity) => Promise<void>;

export function createBatchRouter(deps: BatchApiDeps): express.Router {
  const { records, logger } = deps;
  const router = express.Router();

  /** Authenticates, then runs the handler; a store that fails is a 503, never a stack trace. */
  const route =
    (handler: Handler) =>
    async (req: Request, res: Response): Promise<void> => {
      const client = deps.config.current.auth.identify(req.headers);
      if (!client) return sendError(res, errors.unauthorized());
      noteClient(res, client.name);
      try {
        await handler(req, res, client);
      } catch (error) {
        logger.warn('batch api: the store failed', { path: req.path, client: client.name, error: (error as Error).message });
        if (!res.headersSent) closeLingering(req, res);
        sendError(res, errors.unavailable("The Batch API's store did not answer; retry later."));
      }
    };

  /** The caller's file, or undefined (answered 404: another client's files do not exist for it). */
  const ownFile = async (res: Response, id: string, client: ClientIdentity): Promise<FileRecord | undefined> => {
    const file = isFileId(id) ? await records.files.get(id) : undefined;
    if (file && file.client === client.name) return file;
    sendError(res, errors.fileNotFound(id));
    return undefined;
  };
  const ownBatch = async (res: Response, id: string, client: ClientIdentity): Promise<BatchRecord | undefined> => {
    const batch = isBatchId(id) ? await records.batches.get(id) : undefined;
    if (batch && batch.client === client.name) return batch;
    sendError(res, errors.batchNotFound(id));
    return undefined;
  };

  router.post(
    paths('/files'),
    route((req, res, client) => uploadFile(req, res, client, deps)),
  );

  router.get(
    paths('/files'),
    route(async (req, res, client) => {
      const query = listQuery(res, req.query);
      if (!query) return;
      const purpose = stringParam(req.query.purpose);
      // Files of other purposes are not kept here: such a filter matches nothing.
      if (purpose !== undefined && purpose !== 'batch' && purpose !== 'batch_output') return void res.json(listObject([], false));
      const page = await records.files.list(client.name, purpose as FilePurpose | undefined, query.limit, query.after, query.order);
      res.json(listObject(page.data.map(fileObject), page.hasMore));
    }),
  );

  router.get(
    paths('/files/:fileId'),
    route(async (req, res, client) => {
      const file = await ownFile(res, String(req.params.fileId), client);
      if (file) res.json(fileObject(file));
    }),
  );

  router.get(
    paths('/files/:fileId/content'),
    route(async (req, res, client) => {
      const file = await ownFile(res, String(req.params.fileId), client);
      if (!file) return;
      res.status(200);
      res.setHeader('content-type', 'application/octet-stream');
      res.setHeader('content-length', String(file.bytes));
      res.setHeader('content-disposition', `attachment; filename="${file.filename.replace(/["\\\r\n]/g, '_')}"`);
      try {
        // Streamed with backpressure; content that disappears mid-way (deleted, expired) cuts the answer.
        await pipeline(Readable.from(records.files.content(file)), res);
      } catch (error) {
        if (!res.destroyed) res.destroy();
        if (!res.writableEnded)
          logger.warn('batch api: file content cut', { file: file.id, client: client.name, error: (error as Error).message });
      }
    }),
  );

  router.delete(
    paths('/files/:fileId'),
    route(async (req, res, client) => {
      const file = await ownFile(res, String(req.params.fileId), client);
      if (!file) return;
      const outcome = await records.files.delete(file);
      if (outcome.deleted) return void res.json({ id: file.id, object: 'file', deleted: true });
      if (outcome.inputOf === undefined) return sendError(res, errors.fileNotFound(file.id));
      sendError(
        res,
        errors.conflict(
          `The file ${file.id} is the input of batch ${outcome.inputOf}, which has not ended: cancel the batch or wait until it ends, then delete the file.`,
        ),
      );
    }),
  );

  router.post(
    [...paths('/batches'), '/openai/deployments/:deployment/batches'],
    route((req, res, client) => createBatch(req, res, client, deps)),
  );

  router.get(
    paths('/batches'),
    route(async (req, res, client) => {
      const query = listQuery(res, req.query);
      if (!query) return;
      const page = await records.batches.list(client.name, query.limit, query.after);
      res.json(listObject(page.data.map(batchObject), page.hasMore));
    }),
  );

  router.get(
    paths('/batches/:batchId'),
    route(async (req, res, client) => {
      const batch = await ownBatch(res, String(req.params.batchId), client);
      if (batch) res.json(batchObject(batch));
    }),
  );

  router.post(
    paths('/batches/:batchId/cancel'),
    route(async (req, res, client) => {
      const batch = await ownBatch(res, String(req.params.batchId), client);
      if (!batch) return;
      const outcome = await records.batches.markCancelling(batch.id);
      if (outcome === 'missing') return sendError(res, errors.batchNotFound(batch.id));
      if (outcome === 'refused') {
        const status = (await records.batches.get(batch.id))?.status ?? batch.status;
        return sendError(res, errors.conflict(`Cannot cancel a batch with status '${status}'.`));
      }
      try {
        // Also after a cancel that was already under way: the lane's cancel is idempotent, so a retry completes it.
        await deps.lane.cancel(batch.id);
      } catch (error) {
        logger.error('batch api: the lane could not cancel a batch', {
          batch: batch.id,
          client: client.name,
          error: (error as Error).message,
        });
        return sendError(
          res,
          errors.unavailable(`The batch ${batch.id} is cancelling, but its queued lines could not be stopped yet; retry the cancel.`),
        );
      }
      res.json(batchObject((await records.batches.get(batch.id)) ?? batch));
    }),
  );

  return router;
}

/** Every Batch route, answering 503: the gateway runs without Redis (the in-memory store). */
export function unavailableBatchRouter(config: { readonly current: { readonly auth: ClientAuth } }): express.Router {
  const router = express.Router();
  const all = [
    ...paths('/files'),
    ...paths('/files/*rest'),
    ...paths('/batches'),
    ...paths('/batches/*rest'),
    '/openai/deployments/:deployment/batches',
  ];
  router.all(all, (req, res) => {
    const client = config.current.auth.identify(req.headers);
    if (!client) return sendError(res, errors.unauthorized());
    noteClient(res, client.name);
    // The body (an upload, maybe large) is not read: the connection closes after the answer.
    closeLingering(req, res);
    sendError(res, errors.batchApiNeedsRedis());
  });
  return router;
}

/**
 * POST files: the multipart upload streams through the line check into Redis; a bad file, a file over
 * the limit or a full store is refused and leaves nothing behind.
 */
async function uploadFile(req: Request, res: Response, client: ClientIdentity, deps: BatchApiDeps): Promise<void> {
  const { records, settings, logger } = deps;
  const current = deps.config.current;
  const declared = contentLength(req);
  // Refused before a byte is read: the client is still sending, so the connection closes lingering.
  const refuseUnread = (error: AzureError) => {
    closeLingering(req, res);
    sendError(res, error);
  };
  if (!/^multipart\/form-data\s*;/i.test(req.headers['content-type'] ?? ''))
    return refuseUnread(errors.badRequest('Upload the file as multipart/form-data with the fields purpose (batch) and file.'));
  if (declared !== undefined && declared > settings.maxFileBytes + MULTIPART_OVERHEAD_BYTES)
    return refuseUnread(errors.fileTooLarge(settings.maxFileBytes));
  const needed = Math.min(declared ?? settings.maxFileBytes, settings.maxFileBytes);
  const reservation = await records.files.reserve(needed);
  if (!reservation.ok) {
    logger.warn('batch api: upload refused, the store is full', {
      client: client.name,
      usedBytes: reservation.usedBytes,
      storeBytes: reservation.storeBytes,
    });
    return refuseUnread(errors.batchStoreFull(reservation.usedBytes, reservation.storeBytes, needed));
  }
  const { upload } = reservation;
  const check = new BatchFileCheck({ pools: current.pools, maxBodyBytes: current.settings.maxBodyBytes, maxLines: settings.maxFileLines });
  try {
    const received = await receiveMultipart(req, 'file', { fileBytes: settings.maxFileBytes, fieldBytes: 1024, parts: 10 }, (part) => {
      const early = part.fieldsSoFar.get('purpose');
      // The purpose came first and is not batch: nothing of the file is worth reading.
      if (early !== undefined && early !== 'batch') return Promise.reject(new PurposeError(early));
      return upload.receive(part.stream, check);
    });
    const purpose = received.fields.get('purpose');
    if (purpose !== 'batch') return sendError(res, purposeError(purpose));
    if (!received.file)
      return sendError(res, errors.badRequest('The upload has no file: send the JSONL file in the multipart field "file".'));
    const { result, part } = received.file;
    if (!result.ok) return sendError(res, errors.invalidBatchFile(result.problems, result.problemCount));
    const file = await upload.commit(client.name, part.filename.slice(0, MAX_FILENAME_CHARS), result.summary);
    logger.info('batch api: file stored', { client: client.name, file: file.id, bytes: file.bytes, lines: file.lines, pool: file.pool });
    res.json(fileObject(file));
  } catch (error) {
    if (error instanceof PurposeError) return refuseUnread(purposeError(error.purpose));
    if (!(error instanceof MultipartError)) throw error;
    if (error.failure === 'aborted') return void res.destroy();
    if (error.failure === 'too-large') return refuseUnread(errors.fileTooLarge(settings.maxFileBytes));
    if (error.failure === 'field-too-large') return refuseUnread(errors.badRequest('A form field of the upload is too large.'));
    refuseUnread(errors.badRequest('The upload is not valid multipart/form-data.'));
  } finally {
    // A no-op after commit; otherwise the reservation and what was written go.
    await upload
      .abandon()
      .catch((error: Error) =>
        logger.warn('batch api: an abandoned upload was not cleaned up', { file: upload.fileId, error: error.message }),
      );
  }
}

class PurposeError extends Error {
  readonly purpose: string;
  constructor(purpose: string) {
    super(`purpose ${purpose}`);
    this.purpose = purpose;
  }
}

function purposeError(purpose: string | undefined): AzureError {
  if (purpose === undefined) return errors.badRequest('The upload has no purpose: set the field purpose to batch.');
  return errors.badRequest(
    `This gateway stores files for the Batch API only: purpose must be batch, not ${JSON.stringify(purpose.slice(0, 64))}.`,
  );
}

/** POST batches: checks the request and the input file, stores the batch, hands it to the lane. */
async function createBatch(req: Request, res: Response, client: ClientIdentity, deps: BatchApiDeps): Promise<void> {
  const { records, logger } = deps;
  const body = await readJsonBody(req, res, deps.config.current.settings.bodyTimeoutMs);
  if (!body) return;
  const { input_file_id: inputFileId, endpoint: endpointShown, completion_window: window, metadata } = body;
  if (typeof inputFileId !== 'string')
    return sendError(res, errors.badRequest('input_file_id must be the id of a file uploaded with purpose batch.'));
  const endpoint = batchEndpointOf(endpointShown);
  if (!endpoint) return sendError(res, errors.badRequest(`endpoint must be one of ${ENDPOINT_NAMES.join(', ')}.`));
  if (window !== '24h') return sendError(res, errors.badRequest('completion_window must be "24h".'));
  const metadataProblem = checkMetadata(metadata);
  if (metadataProblem) return sendError(res, errors.badRequest(metadataProblem));
  const file = isFileId(inputFileId) ? await records.files.get(inputFileId) : undefined;
  if (!file || file.client !== client.name) return sendError(res, errors.fileNotFound(inputFileId));
  if (file.kind !== 'input')
    return sendError(
      res,
      errors.badRequest(`The file ${file.id} is a batch's ${file.kind} file; a batch reads a file uploaded with purpose batch.`),
    );
  if (file.endpoint !== endpoint) {
    return sendError(
      res,
      errors.badRequest(
        `line 1 of ${file.id} (as every line of it) has url ${file.endpoint}, not the batch's endpoint ${String(endpointShown)}.`,
      ),
    );
  }
  // The config may have changed since the upload.
  const pool = deps.config.current.pools.get(file.pool!);
  if (!pool || pool.config.background?.enabled === false) {
    return sendError(
      res,
      errors.badRequest(
        `The lines of ${file.id} run on pool ${file.pool}, which ${pool ? 'no longer runs batch lines' : 'is no longer configured'}.`,
      ),
    );
  }
  const batch = await records.batches.create({
    client: client.name,
    file,
    endpoint,
    endpointShown: endpointShown as string,
    metadata: (metadata as Record<string, string> | null | undefined) ?? null,
  });
  if (!batch) return sendError(res, errors.fileNotFound(file.id));
  try {
    const { id, pool: poolName, total, status, expiresAt, createdAt } = batch;
    await deps.lane.submit({ id, client: client.name, pool: poolName, endpoint, total, status, expiresAt, createdAt });
  } catch (error) {
    logger.error('batch api: a batch could not be queued', { batch: batch.id, client: client.name, error: (error as Error).message });
    await records.batches
      .markFailed(batch.id, { code: 'queue_unavailable', message: 'The batch could not be queued; create it again.' })
      .catch(() => undefined);
    return sendError(res, errors.unavailable(`The batch ${batch.id} could not be queued (it is marked failed); create it again.`));
  }
  logger.info('batch api: batch created', { client: client.name, batch: batch.id, file: file.id, lines: batch.total, pool: batch.pool });
  res.json(batchObject((await records.batches.get(batch.id)) ?? batch));
}

/** OpenAI's metadata: at most 16 string pairs, keys up to 64 characters, values up to 512; a problem's text or undefined. */
function checkMetadata(metadata: unknown): string | undefined {
  if (metadata === undefined || metadata === null) return undefined;
  if (typeof metadata !== 'object' || Array.isArray(metadata)) return 'metadata must be an object of string values.';
  const entries = Object.entries(metadata);
  if (entries.length > METADATA.pairs) return `metadata may have at most ${METADATA.pairs} pairs.`;
  for (const [key, value] of entries) {
    if (key.length > METADATA.keyChars) return `metadata keys may have at most ${METADATA.keyChars} characters.`;
    if (typeof value !== 'string') return 'metadata values must be strings.';
    if (value.length > METADATA.valueChars) return `metadata values may have at most ${METADATA.valueChars} characters.`;
  }
  return undefined;
}

/** A small JSON object body, or undefined (answered). */
async function readJsonBody(req: IncomingMessage, res: ServerResponse, timeoutMs: number): Promise<Record<string, unknown> | undefined> {
  let raw: Buffer;
  try {
    raw = await readRequestBody(req, JSON_BODY_LIMIT, timeoutMs);
  } catch (error) {
    const failure = error instanceof BodyError ? error.failure : 'aborted';
    if (failure === 'aborted') return void res.destroy();
    if (failure === 'too-large' || failure === 'too-slow') closeLingering(req, res);
    if (failure === 'too-large') return void sendError(res, errors.tooLarge(JSON_BODY_LIMIT));
    if (failure === 'too-slow') return void sendError(res, errors.arrivalTimeout('body', timeoutMs));
    if (failure === 'unsupported-encoding') return void sendError(res, errors.unsupportedEncoding());
    return void sendError(res, errors.badRequest('The request body could not be decoded.'));
  }
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    return void sendError(res, errors.badRequest('The request body is not valid JSON.'));
  }
  if (!json || typeof json !== 'object' || Array.isArray(json))
    return void sendError(res, errors.badRequest('The request body must be a JSON object.'));
  return json as Record<string, unknown>;
}

/** `limit` (1-100, default 20; more is clamped to 100), `after` (an id), `order` (asc, desc); undefined when answered 400. */
function listQuery(res: Response, query: Request['query']): { limit: number; after?: string; order: 'asc' | 'desc' } | undefined {
  const limitText = stringParam(query.limit);
  const after = stringParam(query.after);
  const order = stringParam(query.order) ?? 'desc';
  const limit = limitText === undefined ? 20 : Number(limitText);
  if (!Number.isInteger(limit) || limit < 1) return void sendError(res, errors.badRequest('limit must be a whole number from 1 to 100.'));
  if (after !== undefined && !isFileId(after) && !isBatchId(after))
    return void sendError(res, errors.badRequest('after must be an id from an earlier page.'));
  if (order !== 'asc' && order !== 'desc') return void sendError(res, errors.badRequest('order must be asc or desc.'));
  return { limit: Math.min(limit, MAX_LIST_LIMIT), ...(after !== undefined ? { after } : {}), order };
}

/** A query parameter given once; a repeated one reads as '', which no parameter accepts. */
function stringParam(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  return Array.isArray(value) ? '' : undefined;
}

function contentLength(req: IncomingMessage): number | undefined {
  const header = req.headers['content-length'];
  if (header === undefined) return undefined;
  const value = Number(header);
  return Number.isFinite(value) && value >= 0 ? value : undefined;
}
