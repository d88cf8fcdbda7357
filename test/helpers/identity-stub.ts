/**
 * A stand-in for the managed-identity endpoint that Azure App Service and Container Apps give a
 * process: plain HTTP on loopback, named by IDENTITY_ENDPOINT, guarded by the secret in
 * IDENTITY_HEADER (sent back as `x-identity-header`). It answers as the 2019-08-01 API does
 * (`GET ?api-version=2019-08-01&resource=…[&client_id=…]` →
 * `{"access_token","expires_on":"<unix seconds>","resource","token_type":"Bearer","client_id"}`),
 * which @azure/identity's ManagedIdentityCredential reads through MSAL's App Service source.
 *
 * It hands out `tokens` in order, a fresh one per call, so a test can start the simulator with them
 * among its keys (the simulator accepts `Authorization: Bearer <key>`) and tell which fetch an
 * upstream request used. `set()` changes what the next calls get: lifetime, delay, failure.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { serve, type LocalServer } from './local-http.ts';

export const APP_SERVICE_API_VERSION = '2019-08-01';
export const COGNITIVE_SERVICES_RESOURCE = 'https://cognitiveservices.azure.com';

export interface StubBehaviour {
  /** Seconds from now to the token's expires_on (whole seconds, as the endpoint sends). */
  lifetimeS: number;
  /** Time before the answer. */
  delayMs: number;
  /** Answer every call with this status and an error body instead of a token (undefined: tokens). */
  failStatus: number | undefined;
}

export interface StubCall {
  at: number;
  clientId: string | undefined;
  resource: string | null;
  /** The token handed out, or undefined when the call failed or was refused. */
  token: string | undefined;
  /** expires_on of that token, in ms. */
  expiresAt: number | undefined;
  /** Why the stub refused the call (wrong secret, api-version, method), as the real endpoint would. */
  refused: string | undefined;
  status: number;
}

export interface IdentityStub {
  /** IDENTITY_ENDPOINT and IDENTITY_HEADER, for the gateway process's environment. */
  env: { IDENTITY_ENDPOINT: string; IDENTITY_HEADER: string };
  /** Every token it may hand out, in the order it does. */
  tokens: readonly string[];
  calls: StubCall[];
  /** Calls that got a token. */
  issued(): StubCall[];
  set(behaviour: Partial<StubBehaviour>): void;
  close(): Promise<void>;
}

/** A token shaped like Entra ID's (a JWT: header.payload.signature), unique per stub and call. */
function makeToken(n: number): string {
  const payload = Buffer.from(JSON.stringify({ aud: COGNITIVE_SERVICES_RESOURCE, n, nonce: randomBytes(6).toString('hex') })).toString(
    'base64url',
  );
  return `eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.${payload}.${randomBytes(16).toString('base64url')}`;
}

export async function startIdentityStub(options: Partial<StubBehaviour> & { tokenCount?: number } = {}): Promise<IdentityStub> {
  const secret = randomBytes(12).toString('hex');
  const tokens = Array.from({ length: options.tokenCount ?? 100 }, (_, n) => makeToken(n));
  const behaviour: StubBehaviour = { lifetimeS: 3600, delayMs: 0, failStatus: undefined, ...options };
  const calls: StubCall[] = [];
  let next = 0;

  const answer = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://stub');
    const call: StubCall = {
      at: Date.now(),
      clientId: url.searchParams.get('client_id') ?? undefined,
      resource: url.searchParams.get('resource'),
      token: undefined,
      expiresAt: undefined,
      refused: undefined,
      status: 200,
    };
    calls.push(call);
    const refuse = (status: number, reason: string) => {
      call.refused = reason;
      call.status = status;
      answer(res, status, { statusCode: status, message: reason });
    };
    if (req.method !== 'GET' || url.pathname !== '/msi/token') return refuse(404, `no route ${req.method} ${url.pathname}`);
    if (req.headers['x-identity-header'] !== secret) return refuse(401, 'the x-identity-header secret is missing or wrong');
    if (url.searchParams.get('api-version') !== APP_SERVICE_API_VERSION) return refuse(400, 'unsupported api-version');
    if (!call.resource) return refuse(400, 'resource is required');
    const { delayMs, failStatus, lifetimeS } = behaviour;
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    if (failStatus !== undefined) {
      call.status = failStatus;
      return answer(res, failStatus, { statusCode: failStatus, message: 'An unexpected error occured while fetching the AAD Token.' });
    }
    const token = tokens[next++];
    if (!token) return refuse(500, 'the stub ran out of tokens');
    const expiresOn = Math.floor(Date.now() / 1000) + lifetimeS;
    call.token = token;
    call.expiresAt = expiresOn * 1000;
    answer(res, 200, {
      access_token: token,
      expires_on: String(expiresOn),
      resource: call.resource,
      token_type: 'Bearer',
      client_id: call.clientId ?? '00000000-0000-0000-0000-000000000000',
    });
  };

  const server: LocalServer = await serve((req, res) => void handle(req, res).catch(() => res.destroy()));
  return {
    env: { IDENTITY_ENDPOINT: `${server.url}/msi/token`, IDENTITY_HEADER: secret },
    tokens,
    calls,
    issued: () => calls.filter((call) => call.token !== undefined),
    set(change) {
      Object.assign(behaviour, change);
    },
    close: () => server.close(),
  };
}
