/**
 * Pipes a deployment's answer to the client as it arrives, chunk by chunk, and tells how it ended:
 * whole, cut by upstream (a reset, or idle past the stream timeout), or left by the client. Usage is
 * read from the tail as it streams past, or from the usage chunk the stripper takes back out.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { IdRewriter } from './id-rewriter.ts';
import { UsageTail, type Usage } from './usage.ts';
import { UsageStripper } from './usage-stream.ts';

export type PipeOutcome = 'ok' | 'upstream-broke' | 'client-closed-mid-response';

export interface PipeResult {
  outcome: PipeOutcome;
  usage: Usage | undefined;
}

export interface PipeOptions {
  /** Upstream silent this long: the stream is cut. */
  idleTimeoutMs: number;
  /** The usage chunk was asked for by the gateway, not the client: take it back out. */
  stripUsage: boolean;
  /** Responses and conversations: ids handed out carry the resource's tag (id-rewriter.ts). */
  ids?: { tag: string; restored: ReadonlyMap<string, string>; readsUsage: boolean };
}

/** What the answer passes through on its way (the id rewriter, the usage stripper): bytes in, bytes out. */
interface BodyRewriter {
  readonly usage: Usage | undefined;
  /** What to send of this chunk now, if anything. It may be the chunk itself, changed in place. */
  take(chunk: Buffer): Buffer | undefined;
  /** What is left to send once the answer ended. */
  end(): Buffer | undefined;
}

/** Not an async function: a stream's pipe is held for as long as it flows, and a suspended frame would be held with it. */
export function pipeResponse(response: IncomingMessage, res: ServerResponse, options: PipeOptions): Promise<PipeResult> {
  const rewriter = rewriterOf(response, res, options);
  // Usage is the rewriter's to read when there is one; otherwise it is read from the tail.
  const tail = rewriter ? undefined : new UsageTail();
  const idle = setTimeout(() => response.destroy(new Error('upstream stream went idle')), options.idleTimeoutMs);
  // Done when the client's response is: finished, or closed (client gone, or cut because upstream
  // broke or went idle: the proxy destroys the client's response when its upstream dies early).
  // Whichever side closes first decides the outcome: the other side's close follows from it.
  let clientGone = false;
  let upstreamBroke = false;
  let settled = false;
  return new Promise<PipeResult>((resolve) => {
    // Once: a finished response closes after it.
    const settle = () => {
      if (settled) return;
      settled = true;
      clearTimeout(idle);
      const outcome = upstreamBroke ? 'upstream-broke' : clientGone ? 'client-closed-mid-response' : 'ok';
      resolve({ outcome, usage: rewriter ? rewriter.usage : tail!.usage() });
    };
    res.once('finish', settle);
    res.once('close', () => {
      if (!res.writableFinished && !upstreamBroke) clientGone = true;
      settle();
    });
    response.once('close', () => {
      if (response.complete || clientGone) return;
      upstreamBroke = true;
      if (!res.destroyed) res.destroy();
    });
    forward(response, res, rewriter, tail, idle);
  });
}

/**
 * The answer to the client chunk by chunk, as `pipe` would send it but with one listener doing it
 * all (the idle timer, the usage tail, the rewrite) and no stream in between: each chunk is one
 * write. Backpressure as `pipe`'s: upstream pauses while the client's socket is full. The proxy
 * (httpxy) destroys one side when the other closes early.
 */
function forward(
  response: IncomingMessage,
  res: ServerResponse,
  rewriter: BodyRewriter | undefined,
  tail: UsageTail | undefined,
  idle: NodeJS.Timeout,
): void {
  let headFlat = false;
  response.on('data', (chunk: Buffer) => {
    idle.refresh();
    let out: Buffer | undefined = chunk;
    if (rewriter) out = rewriter.take(chunk);
    else tail!.push(chunk);
    if (out && out.length > 0 && !res.write(out)) response.pause();
    if (!headFlat && res.headersSent) headFlat = flattenHead(res);
  });
  res.on('drain', () => response.resume());
  response.once('end', () => {
    const rest = rewriter?.end();
    if (rest && rest.length > 0) res.end(rest);
    else res.end();
  });
}

/**
 * Node builds the client's response head by appending every header's pieces to one string: a rope
 * of some forty pieces (about 1.5 KB) that the response keeps (`_header`) for as long as it lives.
 * Converting a string to a number flattens it in place (V8), and the pieces can go. True once done.
 */
function flattenHead(res: ServerResponse): boolean {
  const head = (res as ServerResponse & { _header?: unknown })._header;
  if (typeof head === 'string') void Number(head);
  return true;
}

/** What the answer passes through on its way, if anything: the id rewriter or the usage stripper. */
function rewriterOf(response: IncomingMessage, res: ServerResponse, options: PipeOptions): BodyRewriter | undefined {
  if (options.ids) {
    // The rewritten body has another length: it goes out chunked.
    res.removeHeader('content-length');
    const stream = String(response.headers['content-type'] ?? '').startsWith('text/event-stream');
    return new IdRewriter(options.ids.tag, stream, options.ids.restored, options.ids.readsUsage);
  }
  return options.stripUsage ? new UsageStripper() : undefined;
}

/** Reads a (small) error body; stops at `limit` bytes so a misbehaving upstream cannot fill memory. */
export async function readLimited(response: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of response as AsyncIterable<Buffer>) {
      if (size < limit) chunks.push(chunk.subarray(0, limit - size));
      size += chunk.length;
    }
  } catch {
    // A reset while reading an error body: what was read is all there is.
  }
  return Buffer.concat(chunks);
}
