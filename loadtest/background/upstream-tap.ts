/**
 * The upstream tap: an in-process proxy between the gateways and the simulator that notes every
 * upstream call with the simulator's own answer (status, usage) and tells interactive calls from the
 * lane's by the x-request-id the gateway sends (`batch_…` for batch lines, `probe_…` for the prober).
 * The simulator counts its totals but cannot split them; the tap's sums are checked against those totals.
 */
import { Agent, createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { ProcessSet } from '../../shared/processes/process-set.ts';
import { loopbackUrl } from '../lib/http-client.ts';

export type CallKind = 'interactive' | 'background' | 'probe';

export interface UpstreamCall {
  kind: CallKind;
  /** The x-request-id the gateway sent (its id of the request: the same on every try). */
  requestId: string;
  /** performance.now() when the gateway's call reached the tap, and when the simulator's answer ended. */
  startMs: number;
  endMs: number;
  /** The simulator's status; 0 when the call broke off without a whole answer. */
  status: number;
  promptTokens: number;
  completionTokens: number;
}

/** Bodies of JSON answers are read for their usage up to this size (the benchmark's are a few KB). */
const MAX_BODY_READ = 256 * 1024;

export function callKind(requestId: string): CallKind {
  if (requestId.startsWith('batch_')) return 'background';
  if (requestId.startsWith('probe_')) return 'probe';
  return 'interactive';
}

function usageOf(chunks: Buffer[]): { promptTokens: number; completionTokens: number } {
  try {
    const usage = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { usage?: { prompt_tokens?: number; completion_tokens?: number } })
      .usage;
    return { promptTokens: usage?.prompt_tokens ?? 0, completionTokens: usage?.completion_tokens ?? 0 };
  } catch {
    return { promptTokens: 0, completionTokens: 0 };
  }
}

const firstHeader = (headers: IncomingHttpHeaders, name: string) => {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
};

export interface UpstreamTap {
  url: string;
  /** Every finished call, in the order they ended. */
  readonly calls: UpstreamCall[];
}

export async function startUpstreamTap(simulatorUrl: string, processes: ProcessSet, maxSockets: number): Promise<UpstreamTap> {
  const target = loopbackUrl(simulatorUrl);
  const agent = new Agent({ keepAlive: true, maxSockets });
  const calls: UpstreamCall[] = [];
  const server = createServer((req, res) => {
    const startMs = performance.now();
    const requestId = firstHeader(req.headers, 'x-request-id') ?? '';
    let noted = false;
    const note = (status: number, chunks: Buffer[] | undefined) => {
      if (noted) return;
      noted = true;
      const usage = chunks && status === 200 ? usageOf(chunks) : { promptTokens: 0, completionTokens: 0 };
      calls.push({ kind: callKind(requestId), requestId, startMs, endMs: performance.now(), status, ...usage });
    };
    const upstream = httpRequest(
      { agent, hostname: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (response) => {
        const status = response.statusCode ?? 502;
        const json = (firstHeader(response.headers, 'content-type') ?? '').includes('json');
        const chunks: Buffer[] | undefined = json ? [] : undefined;
        let read = 0;
        res.writeHead(status, response.headers);
        response.on('data', (chunk: Buffer) => {
          if (chunks && read + chunk.length <= MAX_BODY_READ) chunks.push(chunk);
          read += chunk.length;
        });
        response.on('end', () => note(status, chunks));
        response.on('close', () => {
          if (!response.complete) note(0, undefined);
        });
        response.pipe(res);
      },
    );
    upstream.on('error', () => {
      note(0, undefined);
      res.destroy();
    });
    req.pipe(upstream);
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
  });
  await new Promise<void>((resolvePromise) => server.listen(0, '127.0.0.1', resolvePromise));
  processes.onCleanup(() => {
    server.closeAllConnections();
    server.close();
    agent.destroy();
  });
  const address = server.address();
  return { url: `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`, calls };
}

/** The calls that started in [fromMs, toMs) (performance.now()). */
export function callsBetween(calls: readonly UpstreamCall[], fromMs: number, toMs: number): UpstreamCall[] {
  return calls.filter((c) => c.startMs >= fromMs && c.startMs < toMs);
}
