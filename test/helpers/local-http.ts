/**
 * Plain node:http servers and a client on 127.0.0.1 for tests of one stage at a time: the server's
 * handler is the code under test, the client reads exactly what went over the wire.
 */
import { Agent, createServer, request, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface LocalServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<LocalServer> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** A port nothing listens on (bound once, then released). */
export async function closedPort(): Promise<number> {
  const server = await serve(() => undefined);
  await server.close();
  return server.port;
}

/** Reads a request or response body whole. */
export async function readAll(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

export interface SendOptions {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  /** One buffer: sent with its content-length. Several: sent chunked, one write each. */
  body?: Buffer | Buffer[];
  timeoutMs?: number;
}

export interface Received {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** False when the connection was cut before the response ended. */
  complete: boolean;
  /** True when it was this client that gave up, at its timeout: the server never ended or cut the response. */
  timedOut: boolean;
}

// No keep-alive: every request has its own connection, so a test never inherits another's socket.
const agent = new Agent({ keepAlive: false });

/** One request; resolves when the response ended or was cut (at the latest after the timeout), rejects when no response head came. */
export function send(url: string, options: SendOptions = {}): Promise<Received> {
  const target = new URL(options.path ?? '/', url);
  return new Promise((resolve, reject) => {
    let response: IncomingMessage | undefined;
    let timedOut = false;
    const chunks: Buffer[] = [];
    const done = (error?: Error) => {
      clearTimeout(timer);
      if (!response) return reject(error ?? new Error('no response'));
      resolve({
        status: response.statusCode ?? 0,
        headers: response.headers,
        body: Buffer.concat(chunks),
        complete: response.complete,
        timedOut,
      });
    };
    const req = request(target, { method: options.method ?? 'POST', headers: options.headers, agent }, (res) => {
      response = res;
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('error', () => done());
      res.once('close', () => done());
    });
    const timer = setTimeout(() => {
      timedOut = true;
      req.destroy(new Error('no response in time'));
    }, options.timeoutMs ?? 5000);
    req.once('error', done);
    const body = options.body;
    if (Array.isArray(body)) {
      for (const piece of body) req.write(piece);
      req.end();
    } else req.end(body);
  });
}
