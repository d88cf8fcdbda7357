/**
 * Routes one client request: lease a deployment, send the attempt, and on a retryable failure
 * before any byte reached the client try another deployment, within the attempt limit and the
 * deadline. The first acceptable response is piped to the client as it arrives.
 *
 * This file is the loop; each decision lives with a collaborator: leasing.ts (which deployment, and
 * the lease's lifetime), wait-queue.ts (waiting for room), client-quota.ts, health.ts (breakers,
 * ejections and cooldowns, counted when an answer ends), retry-policy.ts (what fails over),
 * attempt-history.ts (what to answer when nothing worked), accounting.ts (what an attempt costs),
 * and upstream/ for the attempt itself.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { GatewaySettings } from '../../shared/config/schema.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { noTokenOutcome, type UpstreamCredentials } from '../upstream/credentials.ts';
import type { AttemptOutcome, Forwarder } from '../upstream/forwarder.ts';
import { attemptHeaders, hiddenHeaderSet, isProvisioned } from '../upstream/headers.ts';
import { pipeResponse, readLimited, type PipeOutcome, type PipeResult } from '../upstream/response-pipe.ts';
import { retryAfterMs } from '../upstream/retry-after.ts';
import { targetOf, type Target } from '../upstream/target.ts';
import { deploymentCharge, observe, worthObserving } from './accounting.ts';
import { AttemptHistory, finalAnswer, pinnedAnswer, type Answer, type FailedAttempt } from './attempt-history.ts';
import { hasQuota, PendingQuota, type ClientQuotas, type QuotaCheck } from './client-quota.ts';
import { CountedFailure, type AnswerEnd, type Guarded, type Health } from './health.ts';
import type { Grant, HeldLease, Leasing, Refusal } from './leasing.ts';
import type { ProxiedRequest } from './proxied-request.ts';
import { RequestContext } from './request-context.ts';
import { FAILED_BODY_LIMIT, isFault, isMissingDeployment, mayFailOver, MISCONFIGURED_COOLDOWN_MS } from './retry-policy.ts';
import { WaitTicket } from './wait-queue.ts';

export interface DispatcherDeps {
  settings: GatewaySettings;
  leasing: Leasing;
  quotas: ClientQuotas;
  forwarder: Forwarder;
  /** Each deployment's key, or its Entra ID token. */
  credentials: UpstreamCredentials;
  health: Health;
  metrics: Metrics;
  logger: Logger;
}

/** How one attempt ended for the loop: the request is answered, or another deployment may try. */
type Step = 'done' | 'next';

/** On a background line's 429 only: why the gateway refused it (pool-full, pool-unavailable, client-quota). */
export const THROTTLE_HEADER = 'x-spillway-throttle';

/** How a piped answer ended, for the deployment's health: a client that left counts against nobody. */
const ANSWER_END: Record<PipeOutcome, AnswerEnd> = { ok: 'whole', 'upstream-broke': 'broke', 'client-closed-mid-response': 'left' };

export class Dispatcher {
  private readonly deps: DispatcherDeps;
  private readonly hiddenHeaders: ReadonlySet<string>;

  constructor(deps: DispatcherDeps) {
    this.deps = deps;
    this.hiddenHeaders = hiddenHeaderSet(deps.settings.hiddenResponseHeaders);
  }

  /** Not an async function: a piped answer is waited for by promises alone, not by a suspended frame per stream. */
  handle(req: IncomingMessage, res: ServerResponse, request: ProxiedRequest): Promise<void> {
    const context = new RequestContext(request, res, this.hiddenHeaders);
    // The proxy adds a few 'close' listeners to the client's response per attempt; bounded by the
    // attempt limit, so raise the warning threshold to that bound rather than hear of a "leak".
    res.setMaxListeners(10 + 4 * this.deps.settings.maxAttempts);
    this.deps.metrics.inFlight.inc();
    return this.admit(req, context)
      .finally(() => context.answered)
      .catch((error: unknown) => context.failedInside(error as Error, this.deps.logger))
      .finally(() => {
        this.deps.metrics.inFlight.dec();
        context.finish(this.deps.metrics, this.deps.logger);
      });
  }

  /**
   * The client's quota (most clients have none: no call at all) and the deployments: the quota check
   * goes out in the same tick as the first acquire, and its verdict is read before that grant is used.
   */
  private async admit(req: IncomingMessage, context: RequestContext): Promise<void> {
    const { client, estimatedTokens } = context.request;
    const quota = hasQuota(client) ? new PendingQuota(this.deps.quotas.check(client, estimatedTokens)) : undefined;
    context.quota = quota;
    try {
      await this.route(req, context);
    } finally {
      // Already done beside the lease's release when a response was served (serve); otherwise now.
      await context.atEnd(() => quota?.settle(context.clientCharge()));
    }
  }

  private async route(req: IncomingMessage, context: RequestContext): Promise<void> {
    const { request } = context;
    // A pinned request waits for its own resource alone: in the pool's shared queue it would hold up everyone behind it.
    // A background line never waits: its lane takes the refusal and waits in its own queue.
    const ticket = new WaitTicket(request.pool, request.startedAt, this.deps.logger, {
      queued: !request.affinity && !request.background,
      waits: !request.background,
      metrics: this.deps.metrics,
    });
    try {
      await this.attempts(req, context, ticket);
    } finally {
      // A wait that ended neither in a grant nor by running out (client gone, deadline, a bug) is still counted as over.
      await context.atEnd(() => ticket.stopWaiting('abandoned'));
    }
  }

  /**
   * The quota's verdict, read once, after the first acquire: a refusal (or a failed check) withdraws
   * that acquire's lease (its booking leaves the window whole: it never reached a deployment) and its queue place.
   */
  private async refusedByQuota(context: RequestContext, quota: PendingQuota, grant: Grant, ticket: WaitTicket): Promise<boolean> {
    let check: QuotaCheck;
    try {
      check = await quota.verdict();
    } catch (error) {
      await Promise.all([grant.lease?.withdraw(), ticket.leave()]);
      throw error;
    }
    context.setQuotaHeaders(check.remaining);
    if (check.admitted) return false;
    await Promise.all([grant.lease?.withdraw(), ticket.leave()]);
    this.countThrottled(context, 'client-quota');
    context.reject(check.error, 'client-quota');
    return true;
  }

  private async attempts(req: IncomingMessage, context: RequestContext, ticket: WaitTicket): Promise<void> {
    const { request, res } = context;
    const { settings } = this.deps;
    const pinned = request.affinity;
    const deadline = request.startedAt + settings.deadlineMs;
    const history = new AttemptHistory();
    // Deployments off the resource that holds a pinned request's state are never tried: they would answer 400.
    const excluded = () => (pinned ? [...pinned.excluded, ...history.tried] : history.tried);
    // While a request may wait (maxWaitMs), a 429 is part of the wait and does not use up an attempt.
    const attemptsUsed = () => context.attempts - (ticket.enabled ? history.throttles : 0);
    // A pinned request does not rescue its resource: it would close that resource's circuit for every request.
    // Nor does background work: it runs on capacity that is there, never on a pool put back by force.
    let rescued = pinned !== undefined || request.background;
    // Read after the first acquire, which went out in the same tick as the check (admit).
    let quota = context.quota;
    while (attemptsUsed() < settings.maxAttempts && Date.now() < deadline) {
      if (res.destroyed) return ticket.leave();
      const grant = await this.deps.leasing.acquire(request, excluded(), ticket.queue);
      ticket.waitsIn(grant.store, grant.ok);
      if (quota) {
        const refused = await this.refusedByQuota(context, quota, grant, ticket);
        quota = undefined;
        if (refused) return;
      }
      if (res.destroyed) {
        await grant.lease?.release();
        return ticket.leave();
      }
      if (!grant.ok) {
        // Every deployment out by open circuits alone (ejected at the same moment by two instances): one is put back, once.
        if (!rescued && grant.refusal.reason === 'unavailable') {
          rescued = true;
          if (await this.deps.health.rescue(request.pool.layout, history.tried)) continue;
        }
        // Saturated (not broken): with maxWaitMs, wait in the pool's first-come-first-served queue.
        if (await ticket.waitForRoom(grant.refusal, history.onlyThrottled)) continue;
        await ticket.leave();
        return this.answer(context, finalAnswer(history, request.pool, settings, grant.refusal), grant.refusal);
      }
      try {
        if ((await this.attempt(req, context, grant.lease, history, deadline)) === 'done') return;
      } finally {
        // Every path out of an attempt releases its lease; a path that already did (with the attempt's cost) wins.
        const { lease } = grant;
        await context.atEnd(() => lease.release());
      }
    }
    await this.answer(context, finalAnswer(history, request.pool, settings));
  }

  /** The final answer; for a pinned request, one that says its resource is busy (429) or failing (503), and was the only one tried. */
  private async answer(context: RequestContext, final: Answer, refusal?: Refusal): Promise<void> {
    const { affinity, pool } = context.request;
    const throttled = 'error' in final && final.error.status === 429;
    if (!affinity) {
      // The store found no room (budget), or every deployment is cooling down or out of rotation.
      if (throttled) this.countThrottled(context, refusal && refusal.reason !== 'unavailable' ? 'pool-full' : 'pool-unavailable');
      return context.answer(final);
    }
    if (throttled) this.countThrottled(context, 'pinned-owner');
    const own = [...pool.deployments.keys()].filter((id) => !affinity.excluded.includes(id));
    const failing = refusal?.reason === 'unavailable' && (await this.deps.health.outOfRotation(pool.layout, own).catch(() => false));
    context.answer(pinnedAnswer(final, affinity, failing));
  }

  private async attempt(
    req: IncomingMessage,
    context: RequestContext,
    lease: HeldLease,
    history: AttemptHistory,
    deadline: number,
  ): Promise<Step> {
    const { deployment } = lease;
    context.startAttempt(deployment.config.id);
    const target = targetOf(deployment, context.request);
    const guarded = await this.send(req, context, lease, target, deadline);
    if (!guarded) {
      // This instance's breaker refused (a lease of its own view while the store is away). Not an attempt;
      // not asked again for this request either, or the loop could spin on it until the deadline.
      context.undoAttempt();
      history.exclude(deployment.config.id);
      return 'next';
    }
    try {
      return await this.answered(context, lease, guarded, history, target.askedForUsage);
    } finally {
      // Health counts the attempt once its answer is over; a path that did not say how (the client left) counts against nobody.
      await context.atEnd(() => guarded.end('left'));
    }
  }

  /** The attempt got an answer (or failed): pass it on, or let the loop try another deployment. */
  private async answered(
    context: RequestContext,
    lease: HeldLease,
    guarded: Guarded<AttemptOutcome>,
    history: AttemptHistory,
    askedForUsage: boolean,
  ): Promise<Step> {
    const { outcome } = guarded;
    if (outcome.kind === 'response') {
      const { deployment } = lease;
      const seconds = (performance.now() - context.attemptStartedAt) / 1000;
      this.deps.metrics.upstreamLatency.observe({ pool: deployment.pool, deployment: deployment.config.id }, seconds);
    }
    if (context.res.destroyed) {
      if (outcome.kind === 'response') outcome.response.destroy();
      return 'done';
    }
    if (outcome.kind === 'error') {
      this.countAttempt(lease, outcome.timedOut ? 'timeout' : 'error');
      this.transportFailed(context, lease, history, outcome.timedOut ? 'timeout' : (outcome.error.code ?? 'error'), outcome.timedOut);
      return 'next';
    }
    const status = outcome.response.statusCode ?? 502;
    if (mayFailOver(status)) {
      this.countAttempt(lease, String(status));
      const step = await this.failedResponse(context, lease, outcome.response, history);
      await guarded.end('whole');
      return step;
    }
    this.serve(context, lease, outcome.response, askedForUsage, guarded.end);
    return 'done';
  }

  /** Sends the attempt through the deployment's breaker; undefined when this instance's breaker refused it. */
  private send(req: IncomingMessage, context: RequestContext, lease: HeldLease, target: Target, deadline: number) {
    const { deployment } = lease;
    const { res, request } = context;
    const upstreamTimeoutMs = this.deps.settings.upstreamTimeoutMs;
    const timeLeft = () => Math.max(1, Math.min(upstreamTimeoutMs, deadline - Date.now()));
    // The breaker holds this attempt's closure until its answer is over: it keeps the path, not the body.
    const { path } = target;
    let body: Buffer | undefined = target.body;
    return this.deps.health.guard(request.pool.layout, lease, async () => {
      // The key, or the Entra ID token in hand (waited for only before the first one ever came).
      const found = this.deps.credentials.forAttempt(deployment, timeLeft());
      const auth = found instanceof Promise ? await found : found;
      const sent = body!;
      body = undefined;
      // No token: a failed attempt like a connection failure (the source logs it, once per burst).
      const outcome =
        auth === undefined
          ? noTokenOutcome()
          : await this.deps.forwarder.attempt(req, res, {
              target: deployment.origin,
              path,
              body: sent,
              headers: attemptHeaders(auth, request.requestId),
              headersTimeoutMs: timeLeft(),
            });
      if (!res.destroyed && isFault(outcome)) throw new CountedFailure(outcome);
      return outcome;
    });
  }

  /** No answer at all (connection failure, reset, timeout): that deployment is not tried again. */
  private transportFailed(context: RequestContext, lease: HeldLease, history: AttemptHistory, error: string, timedOut: boolean): void {
    const id = lease.deployment.config.id;
    history.exclude(id);
    history.record({ deployment: id, timedOut });
    this.deps.logger.warn('upstream attempt failed', {
      requestId: context.request.requestId,
      pool: context.request.pool.name,
      deployment: id,
      error,
    });
  }

  /** A 429, 408, 5xx or 404: read whole (it may be what the client gets in the end), then fail over unless it is the client's. */
  private async failedResponse(
    context: RequestContext,
    lease: HeldLease,
    response: IncomingMessage,
    history: AttemptHistory,
  ): Promise<Step> {
    const { deployment } = lease;
    const status = response.statusCode ?? 502;
    const body = await readLimited(response, FAILED_BODY_LIMIT);
    const failure: FailedAttempt = { deployment: deployment.config.id, status, headers: response.headers, body };
    // The cooldown is asked for first, so no other request gets the slot this release frees before
    // the deployment is out; both go to the store in the same tick (one write on one Redis), not one after the other.
    const cooling = status === 429 ? this.deps.health.throttled(deployment, retryAfterMs(response.headers)) : undefined;
    await lease.release(undefined, observe(response.headers, deployment.config));
    if (status === 404) {
      // A 404 about the request itself (an unknown route or api-version): the client's to see.
      if (!isMissingDeployment(status, body)) {
        context.relay(failure);
        return 'done';
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
    else history.exclude(deployment.config.id);
    history.record(failure);
    return 'next';
  }

  /**
   * A response to pass on: piped to the client as it arrives, then counted by health (`end`) and
   * charged (served). Returns once the pipe flows: the request's end waits on the context (answerPiping).
   */
  private serve(
    context: RequestContext,
    lease: HeldLease,
    response: IncomingMessage,
    askedForUsage: boolean,
    end: (how: AnswerEnd) => Promise<void>,
  ): void {
    const { deployment } = lease;
    const labels = { pool: deployment.pool, deployment: deployment.config.id };
    // The deployment's own figures are true now, as its headers arrive; applied at the end of a long
    // response they would count again what left the window meanwhile. Off the latency path.
    const observed = observe(response.headers, deployment.config);
    if (worthObserving(observed)) {
      lease.store
        .observe(deployment.pool, deployment.config.id, observed)
        .catch((error: Error) => this.deps.logger.warn('could not apply a deployment’s rate-limit figures', { error: error.message }));
    }
    context.startResponse(response.statusCode ?? 502, response.headers);
    const { stateful, stream, background } = context.request;
    // The client-facing latency is interactive traffic's: a batch line's would only blur it.
    if (!background) this.deps.metrics.latency.observe({ pool: context.request.pool.name }, (context.firstByteMs ?? 0) / 1000);
    const piping = pipeResponse(response, context.res, {
      idleTimeoutMs: this.deps.settings.streamIdleTimeoutMs,
      stripUsage: askedForUsage,
      ids: stateful && { tag: deployment.resourceTag, restored: stateful.restored, readsUsage: context.request.operation !== undefined },
    });
    // The pipe is flowing now; the first chunk's arrival is the time to first token of a stream.
    response.once('data', () => {
      const seconds = (performance.now() - context.attemptStartedAt) / 1000;
      this.deps.metrics.ttft.observe({ ...labels, stream: String(stream) }, seconds);
    });
    context.answerPiping(piping, (piped) => this.served(context, lease, response, piped, end));
  }

  /** The piped answer is over: its tokens, its attempt, its health verdict, then the lease and the client's booking. */
  private async served(
    context: RequestContext,
    lease: HeldLease,
    response: IncomingMessage,
    piped: PipeResult,
    end: (how: AnswerEnd) => Promise<void>,
  ): Promise<void> {
    const { deployment } = lease;
    const labels = { pool: deployment.pool, deployment: deployment.config.id };
    const { client, background } = context.request;
    context.endResponse(piped);
    if (piped.usage && background) {
      // Batch lines' tokens are counted apart: spillway_tokens_total stays interactive traffic.
      this.deps.metrics.backgroundTokens.inc({ ...labels, kind: 'prompt' }, piped.usage.promptTokens);
      this.deps.metrics.backgroundTokens.inc({ ...labels, kind: 'completion' }, piped.usage.completionTokens);
    } else if (piped.usage) {
      const { promptTokens, completionTokens } = piped.usage;
      this.deps.metrics.tokens.inc({ ...labels, kind: 'prompt' }, promptTokens);
      this.deps.metrics.tokens.inc({ ...labels, kind: 'completion' }, completionTokens);
      const byClient = { client: client.name, pool: labels.pool };
      this.deps.metrics.clientTokens.inc({ ...byClient, kind: 'prompt' }, promptTokens);
      this.deps.metrics.clientTokens.inc({ ...byClient, kind: 'completion' }, completionTokens);
    }
    const broke = piped.outcome === 'upstream-broke';
    this.countAttempt(lease, broke ? 'upstream-broke' : String(response.statusCode));
    if (broke) {
      const { requestId, pool } = context.request;
      this.deps.logger.warn('upstream answer broke off', { requestId, pool: pool.name, deployment: deployment.config.id });
    }
    // Before the release: a probe's verdict is published before its lease lets another probe through.
    await end(ANSWER_END[piped.outcome]);
    const charge = piped.outcome === 'ok' ? deploymentCharge(lease.lease, piped.usage, isProvisioned(response.headers)) : undefined;
    if (piped.outcome === 'ok') {
      // The arrival estimate beside what the window keeps (the reservation itself when no usage came back).
      this.deps.metrics.estimatedTokens.inc({ pool: labels.pool }, lease.lease.tokens);
      this.deps.metrics.chargedTokens.inc({ pool: labels.pool }, charge ?? lease.lease.tokens);
    }
    // The lease and the client's booking settle in one round trip.
    await Promise.all([lease.release(charge), context.quota?.settle(context.clientCharge())]);
  }

  /**
   * The gateway's own 429 (or a pinned request's 503): spillway_throttled_requests_total. A background
   * line's refusal is its lane's to count (spillway_background_throttles_total); its answer says why
   * (THROTTLE_HEADER), so the lane can tell its client's quota from a pool without room.
   */
  private countThrottled(context: RequestContext, reason: 'pool-full' | 'pool-unavailable' | 'client-quota' | 'pinned-owner'): void {
    if (context.request.background) return void context.res.setHeader(THROTTLE_HEADER, reason);
    this.deps.metrics.throttled.inc({ pool: context.request.pool.name, reason });
  }

  private countAttempt(lease: HeldLease, outcome: string): void {
    this.deps.metrics.attempts.inc({ pool: lease.deployment.pool, deployment: lease.deployment.config.id, outcome });
  }
}
