/**
 * Lingering close, as nginx does it (`lingering_close`): after answering a request whose rest the
 * gateway will not read (a 413 body too large, a 408 body too slow, a request Node's parser gave up
 * on), send the answer, half-close the connection (FIN), and keep reading and discarding what the
 * client still sends until it closes its side or its request ends, or until LINGER_LIMITS run out;
 * then close.
 *
 * Why: a socket closed with unread bytes in its receive buffer, or receiving bytes after it closed,
 * makes the kernel send a reset, and a client that is still uploading then sees ECONNRESET or EPIPE
 * instead of the answer it was sent. Node's fetch uploading 64 MB to a 4 MiB limit lost its 413
 * that way in about one run in four (in half the runs at 8-16 MB).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export interface LingerLimits {
  /** Longest the connection stays open after the answer. */
  ms: number;
  /** Most bytes read and discarded after the answer. */
  bytes: number;
}

/**
 * A client reads the answer while it is still sending (every HTTP client does, to see an early
 * answer): it needs a few round trips, not the whole upload, so 2 s is plenty; 64 MB takes a
 * loopback or LAN client well under 2 s, and bounds what one refused client can make the gateway
 * read. After either, the client has had its answer for long enough: the connection is cut.
 * (nginx allows 30 s; the gateway, with a 4 MiB body limit, has less to wait for.)
 */
export const LINGER_LIMITS: LingerLimits = { ms: 2000, bytes: 64 * 1024 * 1024 };

const lingering = new WeakSet<Socket>();

/** True once the socket is in its lingering close: the listener then leaves it alone (parse errors of the discarded rest included). */
export function isLingering(socket: Socket): boolean {
  return lingering.has(socket);
}

/**
 * Makes `res` the connection's last response (`connection: close`) and its end a lingering close
 * instead of an immediate one. Call before the response is ended.
 */
export function closeLingering(req: IncomingMessage, res: ServerResponse, limits: LingerLimits = LINGER_LIMITS): void {
  res.setHeader('connection', 'close');
  const socket = req.socket;
  // Node's http server ends a `connection: close` response with socket.destroySoon() (resOnFinish,
  // lib/_http_server.js): the socket is destroyed as soon as the answer is flushed, unread bytes and
  // all. This one socket lingers instead.
  socket.destroySoon = () => linger(socket, limits, req);
}

/**
 * Half-closes `socket` after what was written to it (and `answer`), then reads and discards until
 * the client closes its side or `req` (the refused request) ends, or `limits` run out; then destroys it.
 */
export function linger(socket: Socket, limits: LingerLimits = LINGER_LIMITS, req?: IncomingMessage, answer?: Buffer): void {
  if (lingering.has(socket)) return;
  lingering.add(socket);
  if (socket.destroyed) return;
  let discarded = 0;
  const cut = () => {
    clearTimeout(timer);
    socket.destroy();
  };
  // Everything the client sent is read: closing now sends no reset. The answer is flushed first.
  const close = () => {
    clearTimeout(timer);
    if (socket.writableFinished) socket.destroy();
    else socket.once('finish', () => socket.destroy());
  };
  const timer = setTimeout(cut, limits.ms);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  // A reset from the client while lingering is an ending like any other.
  socket.on('error', () => undefined);
  // A 'data' listener makes Node's parser hand the socket's bytes to JavaScript, so they are counted here.
  socket.on('data', (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > limits.bytes) cut();
  });
  socket.once('end', close);
  if (req) {
    req.on('error', () => undefined);
    if (req.readableEnded) close();
    else req.once('end', close);
    // The request's own buffer must never fill: a full one stops the socket's reading.
    req.resume();
  }
  socket.resume();
  if (answer) socket.end(answer);
  else socket.end();
}
