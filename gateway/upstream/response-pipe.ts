/**
 * Pipes a deployment's answer to the client as it arrives, chunk by chunk, and tells how it ended:
 * whole, cut by upstream (a reset, or idle past the stream timeout), or left by the client. Usage is
 * read from the tail as it streams past, or from the usage chunk the stripper takes back out.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Transform } from 'node:stream';
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

export async function pipeResponse(response: IncomingMessage, res: ServerResponse, options: PipeOptions): Promise<PipeResult> {
  const tail = new UsageTail();
  const idle = setTimeout(() => response.destroy(new Error('upstream stream went idle')), options.idleTimeoutMs);
  response.on('data', (chunk: Buffer) => {
    tail.push(chunk);
    idle.refresh();
  });
  const transform = transformOf(response, res, options);
  // Done when the client's response is: finished, or closed (client gone, or cut because upstream
  // broke or went idle: the proxy destroys the client's response when its upstream dies early).
  // Whichever side closes first decides the outcome: the other side's close follows from it.
  let clientGone = false;
  let upstreamBroke = false;
  await new Promise<void>((resolve) => {
    const settle = () => {
      clearTimeout(idle);
      resolve();
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
    if (transform) response.pipe(transform).pipe(res);
    else response.pipe(res);
  });
  const outcome = upstreamBroke ? 'upstream-broke' : clientGone ? 'client-closed-mid-response' : 'ok';
  return { outcome, usage: transform ? transform.usage : tail.usage() };
}

/** What the answer passes through on its way, if anything: the id rewriter or the usage stripper. */
function transformOf(
  response: IncomingMessage,
  res: ServerResponse,
  options: PipeOptions,
): (Transform & { usage: Usage | undefined }) | undefined {
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
