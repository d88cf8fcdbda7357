/**
 * Reads a multipart/form-data upload (busboy) as it arrives: its small fields, and its one file part
 * handed to the caller as a stream, so a 50 MB file is never held whole. The file's size limit is
 * enforced while it streams: past it the caller's stream fails with `too-large` and the rest of the
 * request is not parsed (the route answers 413 and closes the connection lingering).
 */
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import busboy from 'busboy';

export type MultipartFailure = 'not-multipart' | 'malformed' | 'too-large' | 'field-too-large' | 'aborted';

export class MultipartError extends Error {
  readonly failure: MultipartFailure;
  constructor(failure: MultipartFailure) {
    super(`multipart upload: ${failure}`);
    this.name = 'MultipartError';
    this.failure = failure;
  }
}

export interface MultipartLimits {
  /** Largest file part. */
  fileBytes: number;
  /** Largest field value (e.g. `purpose`). */
  fieldBytes: number;
  /** Most parts (fields and files) in the request. */
  parts: number;
}

export interface FilePart {
  field: string;
  filename: string;
  mimeType: string;
  /** The file's bytes; fails with MultipartError('too-large') past the limit, ('aborted') when the client goes away. */
  stream: Readable;
  /** The fields that came before the file. */
  fieldsSoFar: ReadonlyMap<string, string>;
}

export interface Received<T> {
  fields: Map<string, string>;
  /** The file part named `fileField` and what `onFile` made of it; undefined when the request had none. */
  file?: { part: Omit<FilePart, 'stream' | 'fieldsSoFar'>; result: T };
}

/**
 * Parses the request to its end. `onFile` must read the stream it is given to its end (or fail);
 * other file parts are discarded. Rejects with MultipartError, or with onFile's own error.
 */
export function receiveMultipart<T>(
  req: IncomingMessage,
  fileField: string,
  limits: MultipartLimits,
  onFile: (file: FilePart) => Promise<T>,
): Promise<Received<T>> {
  if (!/^multipart\/form-data\s*;/i.test(req.headers['content-type'] ?? '')) return Promise.reject(new MultipartError('not-multipart'));
  let parser: busboy.Busboy;
  try {
    parser = busboy({
      headers: req.headers,
      limits: {
        fileSize: limits.fileBytes,
        fieldSize: limits.fieldBytes,
        fieldNameSize: 100,
        parts: limits.parts,
        files: 1,
        headerPairs: 20,
      },
    });
  } catch {
    return Promise.reject(new MultipartError('malformed'));
  }
  return new Promise<Received<T>>((resolve, reject) => {
    const fields = new Map<string, string>();
    let file: { part: Omit<FilePart, 'stream' | 'fieldsSoFar'>; result: Promise<T> } | undefined;
    let fileStream: Readable | undefined;
    let settled = false;
    const fail = (error: Error) => {
      if (settled) return;
      settled = true;
      req.unpipe(parser);
      req.off('close', onClose);
      // The reader, if it still reads, ends with a premature close; the error is the one rejected here.
      fileStream?.destroy();
      reject(error);
    };
    const onClose = () => {
      if (!req.complete) fail(new MultipartError('aborted'));
    };
    parser.on('field', (name, value, info) => {
      if (info.valueTruncated || info.nameTruncated) return fail(new MultipartError('field-too-large'));
      fields.set(name, value);
    });
    parser.on('file', (name, stream, info) => {
      if (name !== fileField || file) return void stream.resume();
      fileStream = stream;
      // Failures reach the reader through its iteration, and the caller through `fail`; never as an unhandled 'error'.
      stream.on('error', () => undefined);
      stream.once('limit', () => fail(new MultipartError('too-large')));
      const part = { field: name, filename: info.filename ?? 'file', mimeType: info.mimeType };
      const result = onFile({ ...part, stream, fieldsSoFar: new Map(fields) });
      // The reader gave up (a store failure, a purpose it refuses): the rest of the upload is not parsed.
      result.catch((error: Error) => fail(error));
      file = { part, result };
    });
    parser.on('error', () => fail(new MultipartError('malformed')));
    parser.on('finish', () => {
      if (settled) return;
      req.off('close', onClose);
      if (!file) {
        settled = true;
        return resolve({ fields });
      }
      const { part, result } = file;
      result.then(
        (value) => {
          if (settled) return;
          settled = true;
          resolve({ fields, file: { part, result: value } });
        },
        (error: Error) => fail(error),
      );
    });
    req.on('close', onClose);
    req.pipe(parser);
  });
}
