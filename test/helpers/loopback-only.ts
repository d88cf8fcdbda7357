/**
 * Preloaded into a gateway process under test (`--import`, see `loopbackOnlyEnv`): no socket of the
 * process may connect anywhere but loopback. A connection to any other host (169.254.169.254, the
 * managed-identity IMDS address, included) is refused before a packet leaves, with ENETUNREACH,
 * and written to the file in SPILLWAY_NET_GUARD_LOG, which the test then reads. The same file
 * records when @azure/identity is loaded at all, so a test can tell that a config without Entra ID
 * never loads it.
 */
import { appendFileSync } from 'node:fs';
import { registerHooks } from 'node:module';
import net from 'node:net';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const GUARD_LOG = 'SPILLWAY_NET_GUARD_LOG';

/** The environment that runs a child process under this guard, writing what it saw to `logFile`. */
export function loopbackOnlyEnv(logFile: string): Record<string, string> {
  const self = pathToFileURL(resolve(import.meta.dirname, 'loopback-only.ts')).href;
  return { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${self}`.trim(), [GUARD_LOG]: logFile };
}

/** 127.0.0.0/8, ::1, localhost (and IPv4-mapped loopback). */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (bare === 'localhost' || bare === '::1') return true;
  const v4 = bare.startsWith('::ffff:') ? bare.slice(7) : bare;
  return net.isIPv4(v4) && v4.startsWith('127.');
}

let installed = false;

/** Guards this process: called by the preload in a child, and by a test file for its own process. */
export function installLoopbackGuard(log: string): void {
  if (installed) return;
  installed = true;
  const note = (line: string) => appendFileSync(log, `${line}\n`);
  type Connect = (this: net.Socket, ...args: unknown[]) => net.Socket;
  const original = net.Socket.prototype.connect as unknown as Connect;
  const guarded: Connect = function (this: net.Socket, ...args: unknown[]) {
    // net.connect passes its already normalized [options, callback]; a caller may pass (options), (port, host) or (path).
    const first = Array.isArray(args[0]) ? (args[0] as unknown[])[0] : args[0];
    let host: string | undefined;
    let port: unknown;
    if (typeof first === 'object' && first !== null) {
      const options = first as { host?: string; port?: unknown; path?: string };
      if (options.path === undefined) {
        host = options.host ?? 'localhost';
        port = options.port;
      }
    } else if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
      port = first;
      host = typeof args[1] === 'string' ? args[1] : 'localhost';
    }
    if (host !== undefined && !isLoopback(host)) {
      note(`blocked ${host}:${String(port)}`);
      const error: NodeJS.ErrnoException = new Error(`connect ENETUNREACH ${host}:${String(port)} (test guard: loopback only)`);
      error.code = 'ENETUNREACH';
      process.nextTick(() => this.destroy(error));
      return this;
    }
    return original.apply(this, args);
  };
  net.Socket.prototype.connect = guarded as unknown as typeof net.Socket.prototype.connect;
  registerHooks({
    resolve(specifier, context, nextResolve) {
      if (specifier === '@azure/identity' || specifier.startsWith('@azure/identity/')) note(`loaded ${specifier}`);
      return nextResolve(specifier, context);
    },
  });
}

const fromEnv = process.env[GUARD_LOG];
if (fromEnv) installLoopbackGuard(fromEnv);
