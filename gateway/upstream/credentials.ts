/**
 * How an attempt authenticates at its deployment: the deployment's `apiKey`, or, for `auth: entra`,
 * a Microsoft Entra ID token (`Authorization: Bearer`) for the Cognitive Services scope.
 *
 * One token source per identity (the default one, or a user-assigned managed identity's `clientId`),
 * created only when a deployment uses it: @azure/identity is not even loaded otherwise. A source
 * fetches its first token when the gateway starts and refreshes it in the background ahead of its
 * expiry, one fetch at a time; an attempt asks synchronously for the token in hand. Only a request
 * that arrives before the first token ever came waits for that first fetch. Without a usable token
 * an attempt fails like a connection failure (the loop fails over), `/readyz` answers 503, and the
 * source keeps retrying with a backoff; the failure is logged once per burst. No token is ever
 * logged, returned or counted: error messages are redacted before they are logged.
 */
import type { AccessToken, TokenCredential } from '@azure/identity';
import type { Logger } from '../logger.ts';
import type { Deployment } from '../pools.ts';
import type { AttemptOutcome } from './forwarder.ts';
import type { UpstreamAuth } from './headers.ts';

/** The scope of an Azure OpenAI (Cognitive Services) data-plane token. */
export const ENTRA_SCOPE = 'https://cognitiveservices.azure.com/.default';

/** Without the credential's own refresh time, refresh this long before expiry (at most half the lifetime). */
const REFRESH_AHEAD_MS = 5 * 60_000;
/** A token is not sent this close to its expiry (at most a tenth of its lifetime): it could expire on the way. */
const EXPIRY_MARGIN_MS = 10_000;
/** One fetch may take this long; then it counts as failed and the next one may start. */
export const FETCH_TIMEOUT_MS = 10_000;
/** Retries after a failed fetch: 0.5 s, 1 s, 2 s, … at most 10 s apart. */
const RETRY_BASE_MS = 500;
const RETRY_MAX_MS = 10_000;
/** Tokens remembered (the latest first) to redact them from any message. */
const REMEMBERED_TOKENS = 4;
/** setTimeout's longest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Makes the credential of one identity: `clientId` of a user-assigned managed identity, or undefined for the default. */
export type CredentialFactory = (clientId: string | undefined) => Promise<TokenCredential>;

/**
 * The credential @azure/identity offers for the identity, imported on first use: a user-assigned
 * managed identity's `ManagedIdentityCredential`; the system-assigned one where App Service or
 * Container Apps says it is there (IDENTITY_ENDPOINT and IDENTITY_HEADER: nothing is probed, no
 * IMDS); `DefaultAzureCredential` elsewhere (environment, workload identity, IMDS, Azure CLI…).
 * The library's own retries are off: the token source retries on its schedule.
 */
export async function azureCredential(clientId: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<TokenCredential> {
  const { DefaultAzureCredential, ManagedIdentityCredential } = await import('@azure/identity');
  const options = { retryOptions: { maxRetries: 0 } };
  if (clientId) return new ManagedIdentityCredential({ ...options, clientId });
  if (env.IDENTITY_ENDPOINT && env.IDENTITY_HEADER) return new ManagedIdentityCredential(options);
  return new DefaultAzureCredential(options);
}

/** The error code of an attempt that had no token to send (the attempt never left the gateway). */
export const NO_TOKEN_CODE = 'ENTRA_TOKEN_UNAVAILABLE';

/** An attempt that could not be sent for want of a token: a failure like a connection failure. */
export function noTokenOutcome(): AttemptOutcome {
  const error: NodeJS.ErrnoException = new Error('no Microsoft Entra ID token is available');
  error.code = NO_TOKEN_CODE;
  return { kind: 'error', error, timedOut: false };
}

interface HeldToken {
  auth: { readonly bearer: string };
  expiresAt: number;
  /** Not sent from this moment on. */
  usableUntil: number;
  /** The background refresh is due. */
  refreshAt: number;
}

/** Replaces tokens, the ones known and anything shaped like one, in a message meant for a log. */
export function redact(text: string, known: readonly string[]): string {
  let out = text;
  for (const token of known) if (token) out = out.split(token).join('[redacted]');
  return out
    .replace(/eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g, '[redacted]')
    .replace(/(access_token["']?\s*[:=]\s*["']?)[^"'\s,}&]+/gi, '$1[redacted]')
    .replace(/(Bearer\s+)[A-Za-z0-9._~+/=-]+/g, '$1[redacted]')
    .slice(0, 2000);
}

function backoff(failures: number): number {
  return Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.max(0, failures - 1));
}

/** One identity's token: fetched at start, refreshed ahead of expiry in the background, one fetch at a time. */
class TokenSource {
  private readonly clientId: string | undefined;
  /** The deployments (pool/id) that use it, for logs and /readyz. */
  readonly deployments: string[] = [];
  private readonly factory: CredentialFactory;
  private readonly logger: Logger;
  private readonly fetchTimeoutMs: number;
  private credential: TokenCredential | undefined;
  private token: HeldToken | undefined;
  private readonly seen: string[] = [];
  private fetching: Promise<void> | undefined;
  /** The first fetch: a request that arrives before any token came waits for it. */
  private readonly first: Promise<void>;
  private settled = false;
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  /** Refreshes in a row that handed back a token already due (a credential's own cache): asked again with a backoff. */
  private early = 0;
  private reported: 'none' | 'warn' | 'error' = 'none';
  private closed = false;

  constructor(clientId: string | undefined, factory: CredentialFactory, logger: Logger, fetchTimeoutMs: number) {
    this.clientId = clientId;
    this.factory = factory;
    this.logger = logger;
    this.fetchTimeoutMs = fetchTimeoutMs;
    this.first = this.refresh();
  }

  private get identity(): string {
    return this.clientId ?? 'default';
  }

  /** The token to send now, or undefined when none is usable. Never waits, never fetches. */
  current(now = Date.now()): UpstreamAuth | undefined {
    const token = this.token;
    return token && now < token.usableUntil ? token.auth : undefined;
  }

  /** True until the first fetch has ended, well or not. */
  get warming(): boolean {
    return !this.settled;
  }

  /** The first fetch's end, or `ms`, whichever comes first. */
  async firstToken(ms: number): Promise<UpstreamAuth | undefined> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.first, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
    clearTimeout(timer);
    return this.current();
  }

  /** A fetch, unless one is under way: then that one. */
  private refresh(): Promise<void> {
    this.fetching ??= this.fetch().finally(() => {
      this.fetching = undefined;
      this.settled = true;
      this.schedule();
    });
    return this.fetching;
  }

  private async fetch(): Promise<void> {
    clearTimeout(this.timer);
    const abort = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    try {
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          abort.abort();
          reject(new Error(`no token within ${this.fetchTimeoutMs} ms`));
        }, this.fetchTimeoutMs);
        timer.unref();
      });
      const credential = await Promise.race([this.credentialOnce(), timedOut]);
      const token = await Promise.race([credential.getToken(ENTRA_SCOPE, { abortSignal: abort.signal }), timedOut]);
      this.accept(token);
    } catch (error) {
      this.failed(error);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The credential, made on the first fetch; a factory that failed is asked again on the next. */
  private async credentialOnce(): Promise<TokenCredential> {
    if (this.credential) return this.credential;
    const credential = await this.factory(this.clientId);
    this.credential = credential;
    this.logger.info('Entra ID credential created', {
      identity: this.identity,
      credential: credential.constructor?.name ?? 'TokenCredential',
      deployments: this.deployments,
    });
    return credential;
  }

  private accept(token: AccessToken | null): void {
    const now = Date.now();
    if (!token || typeof token.token !== 'string' || token.token === '') throw new Error('the credential returned no token');
    if (!(token.expiresOnTimestamp > now)) throw new Error('the credential returned an expired token');
    const lifetime = token.expiresOnTimestamp - now;
    const ownRefresh = token.refreshAfterTimestamp;
    // The credential's own refresh time when it gives one (MSAL: half the lifetime of a long token). One
    // already past (MSAL hands back the token it holds while it fetches the next) is due: asked again soon.
    const refreshAt =
      ownRefresh !== undefined && ownRefresh < token.expiresOnTimestamp
        ? ownRefresh
        : token.expiresOnTimestamp - Math.min(REFRESH_AHEAD_MS, lifetime / 2);
    const previous = this.token;
    if (previous?.auth.bearer !== token.token) {
      this.seen.unshift(token.token);
      this.seen.length = Math.min(this.seen.length, REMEMBERED_TOKENS);
    }
    this.token = {
      auth: previous?.auth.bearer === token.token ? previous.auth : { bearer: token.token },
      expiresAt: token.expiresOnTimestamp,
      usableUntil: token.expiresOnTimestamp - Math.min(EXPIRY_MARGIN_MS, lifetime / 10),
      refreshAt,
    };
    const fields = { identity: this.identity, expiresInS: Math.round(lifetime / 1000), refreshInS: Math.round((refreshAt - now) / 1000) };
    if (this.reported !== 'none') this.logger.info('Entra ID token acquired again', { ...fields, failures: this.failures });
    else if (!previous) this.logger.info('Entra ID token acquired', { ...fields, deployments: this.deployments });
    else this.logger.debug('Entra ID token refreshed', fields);
    this.failures = 0;
    this.reported = 'none';
  }

  private failed(error: unknown): void {
    this.failures += 1;
    const now = Date.now();
    const usable = this.current(now) !== undefined;
    const level = usable ? 'warn' : 'error';
    // Once per burst at each level: a warning while the token in hand still works, an error once none does.
    if (this.reported === 'error' || (this.reported === 'warn' && level === 'warn')) return;
    this.reported = level;
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    const fields = {
      identity: this.identity,
      deployments: this.deployments,
      error: redact(message, this.seen),
      ...(usable && this.token ? { tokenValidForS: Math.round((this.token.usableUntil - now) / 1000) } : {}),
    };
    if (usable) this.logger.warn('Entra ID token refresh failed: the current token is still valid', fields);
    else this.logger.error('no Entra ID token: attempts at its deployments fail over until one can be had', fields);
  }

  /** The next fetch: after a backoff while failing, else when the token in hand is due. */
  private schedule(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    const now = Date.now();
    let at: number;
    if (this.failures > 0 || !this.token) {
      // While failing, one more try when the token in hand stops being usable: that one says so (an error) if it fails.
      const usableUntil = this.token?.usableUntil ?? 0;
      at = Math.min(now + backoff(this.failures), usableUntil > now ? usableUntil : Infinity);
    } else if (this.token.refreshAt > now + RETRY_BASE_MS) {
      this.early = 0;
      at = this.token.refreshAt;
    } else {
      this.early += 1;
      at = now + backoff(this.early);
    }
    this.timer = setTimeout(() => void this.refresh(), Math.min(MAX_TIMER_MS, Math.max(0, at - now)));
    this.timer.unref();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }
}

export interface CredentialOptions {
  /** Makes each identity's credential; @azure/identity's (azureCredential) unless a test gives its own. */
  factory?: CredentialFactory;
  /** How long one fetch may take (FETCH_TIMEOUT_MS). */
  fetchTimeoutMs?: number;
}

/** Every deployment's way to authenticate upstream; token sources only for the identities `auth: entra` deployments use. */
export class UpstreamCredentials {
  private byDeployment = new Map<string, TokenSource>();
  /** Each identity's source, by client id ('' for the default identity). */
  private byIdentity = new Map<string, TokenSource>();
  private sources: TokenSource[] = [];
  private readonly logger: Logger;
  private readonly options: CredentialOptions;

  constructor(deployments: Iterable<Deployment>, logger: Logger, options: CredentialOptions = {}) {
    this.logger = logger;
    this.options = options;
    this.update(deployments);
  }

  /**
   * The deployments of the config in force (at start, and after a reload): an identity a new
   * `auth: entra` deployment uses gets its source (its first token fetched at once); an identity
   * still in use keeps its source and token; a source no deployment uses any more is closed.
   */
  update(deployments: Iterable<Deployment>): void {
    const byIdentity = new Map<string, TokenSource>();
    const byDeployment = new Map<string, TokenSource>();
    for (const deployment of deployments) {
      if (deployment.config.auth !== 'entra') continue;
      const identity = deployment.config.clientId ?? '';
      let source = byIdentity.get(identity);
      if (!source) {
        source = this.byIdentity.get(identity);
        if (source) source.deployments.length = 0;
        else {
          const factory = this.options.factory ?? ((clientId) => azureCredential(clientId));
          source = new TokenSource(deployment.config.clientId, factory, this.logger, this.options.fetchTimeoutMs ?? FETCH_TIMEOUT_MS);
        }
        byIdentity.set(identity, source);
      }
      source.deployments.push(deployment.key);
      byDeployment.set(deployment.key, source);
    }
    for (const [identity, source] of this.byIdentity) if (!byIdentity.has(identity)) source.close();
    this.byIdentity = byIdentity;
    this.byDeployment = byDeployment;
    this.sources = [...byIdentity.values()];
  }

  /** No Entra ID at all: every deployment sends its key. */
  static keysOnly(logger: Logger): UpstreamCredentials {
    return new UpstreamCredentials([], logger);
  }

  /**
   * What an attempt at the deployment sends: its key, or the token in hand, at once. Undefined when
   * an `auth: entra` deployment has no usable token. A promise only before the identity's first
   * token ever came: then the attempt waits for that first fetch, at most `maxWaitMs`.
   */
  forAttempt(deployment: Deployment, maxWaitMs: number): UpstreamAuth | undefined | Promise<UpstreamAuth | undefined> {
    if (deployment.config.auth !== 'entra') return deployment.config.apiKey ?? '';
    const source = this.byDeployment.get(deployment.key);
    if (!source) return undefined;
    const auth = source.current();
    if (auth || !source.warming) return auth;
    return source.firstToken(maxWaitMs);
  }

  /** The `auth: entra` deployments (pool/id) without a usable token now: the instance is not ready while there are any. */
  missing(): string[] {
    return this.sources.filter((source) => source.current() === undefined).flatMap((source) => source.deployments);
  }

  close(): void {
    for (const source of this.sources) source.close();
  }
}
