/**
 * Routes one client request: lease a deployment from the store, send the attempt, and on a
 * retryable failure before any byte reached the client try another deployment, within the attempt
 * limit and the deadline. The first acceptable response is piped to the client as it arrives.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { GatewaySettings } from '../shared/config/schema.ts';
import type { AcquireInput, AcquireResult, Lease, QuotaLease, Store, WindowObservation } from '../shared/store/types.ts';
import { deploymentCharge, isProvisioned, observe, worthObserving } from './accounting.ts';
import { errors, sendError, type AzureError } from './errors.ts';
import type { AttemptOutcome, Forwarder } from './forwarder.ts';
import { CountedFailure, type Health } from './health.ts';
import type { LeaseKeeper } from './leases.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import type { Deployment } from './pools.ts';
import type { ProxiedRequest } from './request.ts';
import type { ClientIdentity } from './auth.ts';
import { retryAfterMs } from './retry-after.ts';
import { UsageTail, type Usage } from './usage.ts';
import { UsageStripper, acceptsStreamOptions } from './usage-stream.ts';

/** Statuses after which another deployment may well succeed. 400/401/403 and a client's 404 are the client's. */
const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);
/** Statuses that count against a destination's circuit (a 429 is a cooldown, not a fault). */
const FAULT_STATUS = new Set([408, 500, 502, 503, 504]);
/** How long a deployment that Azure says does not exist stays out of rotation. */
const MISCONFIGURED_COOLDOWN_MS = 60_000;
/** Polling bounds while a request waits for room (maxWaitMs). */
const MIN_POLL_MS = 10;
const MAX_POLL_MS = 100;
/** A waiter that stops polling (its instance died) loses its place after this. */
const QUEUE_TICKET_TTL_MS = 1_000;
/** A failed attempt's body is kept to hand to the client if no other deployment succeeds. */
const FAILED_BODY_LIMIT = 64 * 1024;
/** Upstream response headers that describe one deployment or one hop, not what the client addressed. */
const DROPPED_RESPONSE_HEADERS = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'proxy-authenticate',
  'set-cookie',
  'x-ratelimit-remaining-requests',
  'x-ratelimit-remaining-tokens',
  'x-ratelimit-limit-requests',
  'x-ratelimit-limit-tokens',
  'x-ratelimit-reset-requests',
  'x-ratelimit-reset-tokens',
  'azure-openai-deployment-utilization',
]);

/** What the attempts of one request ran into, to tell the client the truth when none succeeds. */
class AttemptHistory {
  last: FailedAttempt | undefined;
  /** True while every failure was a throttle (429) or a misconfigured deployment: the pool is full, not broken. */
  onlyThrottled = true;
  soonestCooldownUntil: number | undefined;

  /** Attempts that ended in a 429. */
  throttles = 0;

  record(failure: FailedAttempt): void {
    this.last = failure;
    if (failure.status === 429) this.throttles += 1;
    if (failure.cooldownUntil === undefined) this.onlyThrottled = false;
    else this.soonestCooldownUntil = Math.min(this.soonestCooldownUntil ?? Number.POSITIVE_INFINITY, failure.cooldownUntil);
  }
}

interface FailedAttempt {
  deployment: string;
  status?: number;
  headers?: IncomingMessage['headers'];
  body?: Buffer;
  timedOut?: boolean;
  /** Epoch ms the deployment's cooldown ends, after a 429. */
  cooldownUntil?: number;
}

export interface DispatcherDeps {
  settings: GatewaySettings;
  store: Store;
  /** Used while the shared store does not answer, so the gateway degrades to this instance's own view. */
  fallbackStore: Store;
  forwarder: Forwarder;
  health: Health;
  leases: LeaseKeeper;
  metrics: Metrics;
  logger: Logger;
}

interface RequestLog {
  deployment?: string;
  attempts: number;
  status?: number;
  outcome: string;
  usage?: Usage;
  firstByteMs?: number;
}

export class Dispatcher {
  private readonly deps: DispatcherDeps;

  constructor(deps: DispatcherDeps) {
    this.deps = deps;
  }

  async handle(req: IncomingMessage, res: ServerResponse, request: ProxiedRequest): Promise<void> {
    const log: RequestLog = { attempts: 0, outcome: 'pending' };
    // The proxy adds a few 'close' listeners to the client's response per attempt; bounded by the
    // attempt limit, so raise the warning threshold to that bound rather than hear of a "leak".
    res.setMaxListeners(10 + 4 * this.deps.settings.maxAttempts);
    this.deps.metrics.inFlight.inc();
    try {
      await this.route(req, res, request, log);
    } catch (error) {
      log.outcome = 'error';
      this.deps.logger.error('request failed inside the gateway', { requestId: request.requestId, error: (error as Error).message });
      if (!res.headersSent) sendError(res, errors.internal());
      else res.destroy();
    } finally {
      this.deps.metrics.inFlight.dec();
      if (log.outcome === 'pending') log.outcome = 'client-closed';
      this.logRequest(request, log, res);
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse, request: ProxiedRequest, log: RequestLog): Promise<void> {
    // Most clients have no quota: skip the call (and its promise) entirely.
    const quota = hasQuota(request.client) ? await this.admitClient(res, request, log) : undefined;
    if (quota === 'rejected') return;
    try {
      await this.routeToDeployments(req, res, request, log);
    } finally {
      // The client's token quota is exact: real usage when known, no tokens when no deployment was
      // reached. The request itself stays booked against its rpm, whatever the outcome.
      if (quota) await this.settleQuota(quota, log.usage?.totalTokens ?? (log.attempts === 0 ? 0 : undefined));
    }
  }

  /** Books the request against its client's quota (it has one); answers 429 itself when the client is over it. */
  private async admitClient(res: ServerResponse, request: ProxiedRequest, log: RequestLog): Promise<QuotaLease | undefined | 'rejected'> {
    const { client } = request;
    let result;
    try {
      result = await this.deps.store.acquireQuota({
        subject: client.name,
        tpm: client.tpm,
        rpm: client.rpm,
        estimatedTokens: request.estimatedTokens,
      });
    } catch (error) {
      // Quotas are a fairness tool; with the store gone the client is let through rather than refused.
      this.deps.logger.warn('client quota unavailable: request admitted unchecked', {
        client: client.name,
        error: (error as Error).message,
      });
      return undefined;
    }
    if (result.remainingTokens !== undefined) res.setHeader('x-ratelimit-remaining-tokens', String(result.remainingTokens));
    if (result.remainingRequests !== undefined) res.setHeader('x-ratelimit-remaining-requests', String(result.remainingRequests));
    if (result.ok) return result.lease;
    this.reject(res, request, log, errors.clientQuota(client.name, result.reason, result.retryAfterMs));
    log.outcome = 'client-quota';
    return 'rejected';
  }

  private async settleQuota(lease: QuotaLease, chargedTokens: number | undefined): Promise<void> {
    try {
      await this.deps.store.releaseQuota(lease, chargedTokens);
    } catch (error) {
      this.deps.logger.warn('client quota settlement failed', { error: (error as Error).message });
    }
  }

  private async routeToDeployments(req: IncomingMessage, res: ServerResponse, request: ProxiedRequest, log: RequestLog): Promise<void> {
    const { settings } = this.deps;
    const deadline = request.startedAt + settings.deadlineMs;
    const waitUntil = request.startedAt + request.pool.config.maxWaitMs;
    const ticket = request.pool.config.maxWaitMs > 0 ? randomUUID() : undefined;
    // The store the ticket waits in: the fallback's queue once Redis failed, not Redis's.
    let queuedIn: Store | undefined;
    const tried: string[] = [];
    const history = new AttemptHistory();

    // While a request may wait (maxWaitMs), a 429 is part of the wait and does not use up an attempt.
    const attemptsUsed = () => log.attempts - (ticket ? history.throttles : 0);
    while (attemptsUsed() < settings.maxAttempts && Date.now() < deadline) {
      if (res.destroyed) return this.leaveQueue(queuedIn, request, ticket);
      const acquired = await this.acquire(request, tried, ticket);
      queuedIn = acquired.store;
      if (res.destroyed) {
        if (acquired.result.ok) await this.release(acquired.store, acquired.result.lease);
        return this.leaveQueue(queuedIn, request, ticket);
      }
      if (!acquired.result.ok) {
        const { result } = acquired;
        // Saturated (not broken): with maxWaitMs, wait in the pool's first-come-first-served queue.
        if (ticket && history.onlyThrottled && Date.now() < waitUntil) {
          await sleep(Math.max(MIN_POLL_MS, Math.min(result.retryAfterMs, MAX_POLL_MS, waitUntil - Date.now())));
          continue;
        }
        await this.leaveQueue(queuedIn, request, ticket);
        const answer = this.whenNothingIsEligible(request, result, tried, history);
        if ('deployment' in answer) this.replayFailure(res, request, log, answer, history);
        else this.reject(res, request, log, answer);
        return;
      }
      const { lease } = acquired.result;
      const deployment = request.pool.deployments.get(lease.deploymentId);
      if (!deployment) {
        await this.release(acquired.store, lease);
        throw new Error(`store chose unknown deployment ${lease.deploymentId}`);
      }
      this.deps.leases.track(lease);
      log.attempts += 1;
      log.deployment = deployment.config.id;

      const apiVersion = deployment.config.apiVersion ?? request.apiVersion ?? DEFAULT_API_VERSION;
      const askedForUsage = request.bodyWithUsage !== undefined && acceptsStreamOptions(apiVersion);
      const guarded = await this.deps.health.guard(deployment, lease, async () => {
        const outcome = await this.deps.forwarder.attempt(req, res, {
          target: deployment.origin,
          path: this.upstreamPath(deployment, request.operation, apiVersion),
          body: askedForUsage && request.bodyWithUsage ? request.bodyWithUsage : request.body,
          headers: { 'api-key': deployment.config.apiKey, 'x-request-id': request.requestId },
          headersTimeoutMs: Math.max(1, Math.min(settings.upstreamTimeoutMs, deadline - Date.now())),
        });
        if (!res.destroyed && isFault(outcome)) throw new CountedFailure(outcome);
        return outcome;
      });
      if (!guarded) {
        // This instance's breaker refused; the store will hear of the open circuit shortly. Not an attempt.
        log.attempts -= 1;
        await this.finishLease(acquired.store, lease);
        continue;
      }
      const { outcome } = guarded;
      if (res.destroyed) {
        if (outcome.kind === 'response') outcome.response.destroy();
        await this.finishLease(acquired.store, lease);
        return;
      }
      this.countAttempt(deployment, outcome);

      if (outcome.kind === 'error') {
        await this.finishLease(acquired.store, lease);
        tried.push(deployment.config.id);
        history.record({ deployment: deployment.config.id, timedOut: outcome.timedOut });
        this.deps.logger.warn('upstream attempt failed', {
          requestId: request.requestId,
          pool: request.pool.name,
          deployment: deployment.config.id,
          error: outcome.timedOut ? 'timeout' : (outcome.error.code ?? 'error'),
        });
        continue;
      }

      const { response } = outcome;
      const status = response.statusCode ?? 502;
      if (RETRYABLE_STATUS.has(status) || status === 404) {
        const body = await readLimited(response, FAILED_BODY_LIMIT);
        const failure: FailedAttempt = { deployment: deployment.config.id, status, headers: response.headers, body };
        // The cooldown is asked for first, so no other request gets the slot this release frees before
        // the deployment is out; both go to the store in one write (auto-pipelining), not one after the other.
        const cooling = status === 429 ? this.deps.health.throttled(deployment, retryAfterMs(response.headers)) : undefined;
        await this.finishLease(acquired.store, lease, undefined, observe(response.headers, deployment.config));
        if (status === 404) {
          if (!body.includes('DeploymentNotFound')) {
            // A 404 about the request itself (an unknown route or api-version): the client's to see.
            this.answer(res, request, log, failure);
            return;
          }
          // Our config names a deployment Azure does not have: our fault, not the client's. Fail over.
          this.deps.logger.error('deployment not found upstream: check the config', {
            pool: deployment.pool,
            deployment: deployment.config.id,
          });
          failure.cooldownUntil = await this.deps.health.throttled(deployment, MISCONFIGURED_COOLDOWN_MS);
        }
        // A throttled deployment is not excluded: its cooldown keeps it out exactly as long as it asked,
        // and a waiting request may take it again after that. Any other failure is not tried again.
        if (cooling) failure.cooldownUntil = await cooling;
        else tried.push(deployment.config.id);
        history.record(failure);
        continue;
      }

      // The deployment's own figures are true now, as its headers arrive; applied at the end of a long
      // response they would count again what left the window meanwhile. Off the latency path.
      const observed = observe(response.headers, deployment.config);
      if (worthObserving(observed)) {
        acquired.store
          .observe(deployment.pool, deployment.config.id, observed)
          .catch((error: Error) => this.deps.logger.warn('could not apply a deployment’s rate-limit figures', { error: error.message }));
      }
      await this.pipe(response, res, request, deployment, log, askedForUsage);
      const charge = log.outcome === 'ok' ? deploymentCharge(lease, log.usage, isProvisioned(response.headers)) : undefined;
      await this.finishLease(acquired.store, lease, charge);
      return;
    }

    if (history.last) this.replayFailure(res, request, log, history.last, history);
    else this.reject(res, request, log, errors.upstreamTimeout());
  }

  private async acquire(
    request: ProxiedRequest,
    tried: readonly string[],
    ticket: string | undefined,
  ): Promise<{ store: Store; result: AcquireResult }> {
    const input: AcquireInput = {
      queue: ticket ? { ticket, ttlMs: QUEUE_TICKET_TTL_MS } : undefined,
      pool: request.pool.layout,
      leaseId: randomUUID(),
      leaseMs: this.deps.settings.leaseMs,
      estimatedTokens: request.estimatedTokens,
      exclude: tried,
    };
    try {
      return { store: this.deps.store, result: await this.deps.store.acquire(input) };
    } catch (error) {
      this.deps.metrics.storeErrors.inc();
      this.deps.logger.warn('store unavailable: routing on this instance’s own view', { error: (error as Error).message });
      return { store: this.deps.fallbackStore, result: await this.deps.fallbackStore.acquire(input) };
    }
  }

  /** What to answer when no deployment can take the request now. */
  private whenNothingIsEligible(
    request: ProxiedRequest,
    result: Extract<AcquireResult, { ok: false }>,
    tried: readonly string[],
    history: AttemptHistory,
  ): AzureError | FailedAttempt {
    if (history.last && !history.onlyThrottled) return history.last;
    // Deployments this request already tried are excluded from the store's answer, so their own
    // cooldowns are folded in; when it tried every one, the store's figure is about none of them.
    const untried = tried.length < request.pool.deployments.size;
    let retryAfter = untried ? result.retryAfterMs : Number.POSITIVE_INFINITY;
    if (history.soonestCooldownUntil !== undefined) retryAfter = Math.min(retryAfter, history.soonestCooldownUntil - Date.now());
    if (!Number.isFinite(retryAfter)) retryAfter = this.deps.settings.defaultCooldownMs;
    const detail = result.reason !== 'unavailable' && !history.last ? 'at its token or request budget' : 'throttled or unavailable';
    return errors.saturated(request.pool.name, Math.max(1, retryAfter), detail);
  }

  private replayFailure(
    res: ServerResponse,
    request: ProxiedRequest,
    log: RequestLog,
    failure: FailedAttempt,
    history: AttemptHistory,
  ): void {
    if (history.onlyThrottled) {
      const retryAfter = (history.soonestCooldownUntil ?? Date.now() + this.deps.settings.defaultCooldownMs) - Date.now();
      this.reject(res, request, log, errors.saturated(request.pool.name, Math.max(1, retryAfter), 'throttled or unavailable'));
      return;
    }
    if (failure.status === undefined || failure.status === 404) {
      this.reject(res, request, log, failure.timedOut ? errors.upstreamTimeout() : errors.upstreamUnreachable());
      return;
    }
    this.answer(res, request, log, failure);
  }

  /** Sends an upstream error response that was read whole: the deployment's own Azure-shaped body. */
  private answer(res: ServerResponse, request: ProxiedRequest, log: RequestLog, failure: FailedAttempt): void {
    log.outcome = 'upstream-error';
    log.status = failure.status;
    // The body may have been cut at FAILED_BODY_LIMIT, so its length is recomputed rather than copied.
    const { 'content-length': _length, ...headers } = failure.headers ?? {};
    this.writeHead(res, failure.status ?? 502, headers, request, log.deployment, log.attempts);
    res.end(failure.body);
  }

  private reject(res: ServerResponse, request: ProxiedRequest, log: RequestLog, error: AzureError): void {
    log.outcome = error.status === 429 ? 'saturated' : 'failed';
    log.status = error.status;
    if (log.attempts > 0) {
      res.setHeader('x-gateway-attempts', String(log.attempts));
      if (log.deployment) res.setHeader('x-gateway-deployment', log.deployment);
    }
    sendError(res, error);
  }

  private async pipe(
    response: IncomingMessage,
    res: ServerResponse,
    request: ProxiedRequest,
    deployment: Deployment,
    log: RequestLog,
    askedForUsage: boolean,
  ): Promise<void> {
    const status = response.statusCode ?? 502;
    log.status = status;
    log.outcome = 'streaming';
    log.firstByteMs = Date.now() - request.startedAt;
    this.deps.metrics.latency.observe({ pool: request.pool.name }, log.firstByteMs / 1000);
    this.writeHead(res, status, response.headers, request, deployment.config.id, log.attempts);

    const tail = new UsageTail();
    const idle = setTimeout(() => response.destroy(new Error('upstream stream went idle')), this.deps.settings.streamIdleTimeoutMs);
    response.on('data', (chunk: Buffer) => {
      tail.push(chunk);
      idle.refresh();
    });
    // A usage chunk the client did not ask for is taken back out of its stream.
    const stripper = askedForUsage ? new UsageStripper() : undefined;
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
      if (stripper) response.pipe(stripper).pipe(res);
      else response.pipe(res);
    });
    log.usage = stripper?.usage ?? tail.usage();
    log.outcome = upstreamBroke ? 'upstream-broke' : clientGone ? 'client-closed-mid-response' : 'ok';
    if (log.usage) {
      const labels = { pool: request.pool.name, deployment: deployment.config.id };
      this.deps.metrics.tokens.inc({ ...labels, kind: 'prompt' }, log.usage.promptTokens);
      this.deps.metrics.tokens.inc({ ...labels, kind: 'completion' }, log.usage.completionTokens);
    }
  }

  private writeHead(
    res: ServerResponse,
    status: number,
    headers: IncomingMessage['headers'],
    request: ProxiedRequest,
    deployment: string | undefined,
    attempts: number,
  ): void {
    for (const name in headers) {
      const value = headers[name];
      if (value === undefined || DROPPED_RESPONSE_HEADERS.has(name)) continue;
      res.setHeader(name, value);
    }
    res.setHeader('x-request-id', request.requestId);
    if (deployment) res.setHeader('x-gateway-deployment', deployment);
    res.setHeader('x-gateway-attempts', String(attempts));
    // No flushHeaders: the head goes out with the first body bytes, in one write (a whole JSON answer
    // is then one packet, a stream's head leaves with its first event as Azure sends it).
    res.statusCode = status;
  }

  private upstreamPath(deployment: Deployment, operation: string, apiVersion: string): string {
    return `${deployment.basePath}/openai/deployments/${encodeURIComponent(deployment.config.deployment)}/${operation}?api-version=${encodeURIComponent(apiVersion)}`;
  }

  private async finishLease(store: Store, lease: Lease, chargedTokens?: number, observed?: WindowObservation): Promise<void> {
    this.deps.leases.untrack(lease);
    await this.release(store, lease, chargedTokens, observed);
  }

  private async leaveQueue(store: Store | undefined, request: ProxiedRequest, ticket: string | undefined): Promise<void> {
    if (!ticket || !store) return;
    await store
      .leaveQueue(request.pool.name, ticket)
      .catch((error: Error) => this.deps.logger.warn('could not leave the wait queue', { error: error.message }));
  }

  private async release(store: Store, lease: Lease, chargedTokens?: number, observed?: WindowObservation): Promise<void> {
    try {
      await store.release(lease, chargedTokens, observed);
    } catch (error) {
      // The lease expires on its own within leaseMs.
      this.deps.logger.warn('lease release failed', { error: (error as Error).message });
    }
  }

  private countAttempt(deployment: Deployment, outcome: AttemptOutcome): void {
    const result = outcome.kind === 'response' ? String(outcome.response.statusCode) : outcome.timedOut ? 'timeout' : 'error';
    this.deps.metrics.attempts.inc({ pool: deployment.pool, deployment: deployment.config.id, outcome: result });
  }

  private logRequest(request: ProxiedRequest, log: RequestLog, res: ServerResponse): void {
    const status = log.status ?? res.statusCode;
    this.deps.metrics.requests.inc({ pool: request.pool.name, status: String(status) });
    // Below info level the line would be built only to be dropped.
    if (!this.deps.logger.isInfoEnabled()) return;
    this.deps.logger.info('request', {
      requestId: request.requestId,
      client: request.client.name,
      pool: request.pool.name,
      operation: request.operation,
      deployment: log.deployment,
      attempts: log.attempts,
      status,
      outcome: log.outcome,
      stream: request.stream,
      latencyMs: Date.now() - request.startedAt,
      firstByteMs: log.firstByteMs,
      estimatedTokens: request.estimatedTokens,
      promptTokens: log.usage?.promptTokens,
      completionTokens: log.usage?.completionTokens,
      totalTokens: log.usage?.totalTokens,
    });
  }
}

/** The latest GA api-version, for OpenAI-style requests that name none. */
export const DEFAULT_API_VERSION = '2024-10-21';

function hasQuota(client: ClientIdentity): boolean {
  return client.tpm !== undefined || client.rpm !== undefined;
}

function isFault(outcome: AttemptOutcome): boolean {
  return outcome.kind === 'error' || FAULT_STATUS.has(outcome.response.statusCode ?? 0);
}

/** Reads a (small) error body; stops at `limit` bytes so a misbehaving upstream cannot fill memory. */
async function readLimited(response: IncomingMessage, limit: number): Promise<Buffer> {
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
