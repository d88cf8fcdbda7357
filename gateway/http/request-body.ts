/**
 * Reads a client's request body whole, within the gateway's limit: the body is needed as bytes (it is
 * replayed on every attempt) and as JSON (the pool, the token estimate). A body over the limit is
 * refused from its Content-Length before a byte is read, or as soon as it grows past the limit; a
 * compressed body (Content-Encoding gzip, deflate, br) is inflated with the same limit on its output.
 * A body must also arrive within a time limit: a client trickling bytes must not hold a connection
 * and its buffers for ever.
 */
import type { IncomingMessage } from 'node:http';
import { brotliDecompress, gunzip, inflate, type InputType, type ZlibOptions } from 'node:zlib';

export type BodyFailure = 'too-large' | 'too-slow' | 'aborted' | 'unsupported-encoding' | 'bad-encoding';

export class BodyError extends Error {
  readonly failure: BodyFailure;
  constructor(failure: BodyFailure) {
    super(`request body: ${failure}`);
    this.failure = failure;
  }
}

type Inflate = (input: InputType, options: ZlibOptions, callback: (error: Error | null, result: Buffer) => void) => void;
const DECODERS: Record<string, Inflate> = { gzip: gunzip, 'x-gzip': gunzip, deflate: inflate, br: brotliDecompress as Inflate };

export async function readRequestBody(req: IncomingMessage, limit: number, timeoutMs: number): Promise<Buffer> {
  const encoding = (req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  const decoder = encoding === 'identity' ? undefined : DECODERS[encoding];
  if (encoding !== 'identity' && !decoder) throw new BodyError('unsupported-encoding');
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) throw new BodyError('too-large');
  const raw = await collect(req, limit, timeoutMs);
  if (!decoder) return raw;
  return new Promise((resolve, reject) => {
    decoder(raw, { maxOutputLength: limit }, (error, result) => {
      if (!error) resolve(result);
      else reject(new BodyError((error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' ? 'too-large' : 'bad-encoding'));
    });
  });
}

function collect(req: IncomingMessage, limit: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (failure: BodyFailure) => {
      cleanup();
      req.pause();
      reject(new BodyError(failure));
    };
    const timer = setTimeout(() => stop('too-slow'), timeoutMs);
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return stop('too-large');
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    // 'close' before 'end': the client went away mid-body (an 'error' then comes too, or not).
    const onClose = () => {
      cleanup();
      reject(new BodyError('aborted'));
    };
    const cleanup = () => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
      req.off('error', onClose);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('close', onClose);
    req.on('error', onClose);
  });
}
