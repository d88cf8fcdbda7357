/** Small node:http helpers shared by the API and control handlers. */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** Reads the whole request body; rejects if the client goes away first. */
export function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)));
    req.on('error', reject);
    req.on('aborted', () => reject(new Error('client aborted the request body')));
  });
}

/** Writes a complete JSON response. `headers` are flat [name, value, ...] pairs and get content headers appended. */
export function sendJson(res: ServerResponse, status: number, headers: string[], body: string): void {
  headers.push('content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)));
  res.writeHead(status, headers);
  res.end(body);
}

/** The value of one query parameter, without building a URL object on the hot path. */
export function queryParam(url: string, name: string): string | null {
  const queryStart = url.indexOf('?');
  if (queryStart < 0) return null;
  return new URLSearchParams(url.slice(queryStart + 1)).get(name);
}

export function pathOf(url: string): string {
  const queryStart = url.indexOf('?');
  return queryStart < 0 ? url : url.slice(0, queryStart);
}
