/**
 * One client request on its way through the attempt loop: what it is, what happened to it so far,
 * and the answers that end it. Its `finish` writes the request's one log line and its metrics.
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { errors, sendError, type AzureError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { setAttemptHeaders, setQuotaHeaders, writeUpstreamHead, type GatewayHeaders } from '../upstream/headers.ts';
import { withClientIds } from '../upstream/id-rewriter.ts';
import type { PipeResult } from '../upstream/response-pipe.ts';
import type { Usage } from '../upstream/usage.ts';
import type { Answer, FailedAttempt } from './attempt-history.ts';
import type { PendingQuota } from './client-quota.ts';
import type { ProxiedRequest } from './proxied-request.ts';

const NO_BODY = Buffer.alloc(0);

export class RequestContext {
  readonly request: ProxiedRequest;
  readonly res: ServerResponse;
  /** The deployment tried last (or serving). */
  deployment: string | undefined;
  /** Upstream attempts made; a local breaker's refusal is not one. */
  attempts = 0;
  status: number | undefined;
  outcome = 'pending';
  usage: Usage | undefined;
  firstByteMs: number | undefined;
  /** performance.now() when the latest attempt started: the upstream latency and TTFT histograms count from it. */
  attemptStartedAt = 0;
  /** The client's quota booking, when it has a quota (dispatcher.ts admit). */
  quota: PendingQuota | undefined;

  /** Upstream response headers the client does not see (gateway.hiddenResponseHeaders). */
  private readonly hidden: ReadonlySet<string>;
  /** The answer being piped to the client, with its end's work (answerPiping). */
  private answering: Promise<void> | undefined;
  /** What the attempt loop's frames still have to do once the piped answer is over, in order (atEnd). */
  private afterwards: (() => unknown)[] | undefined;

  constructor(request: ProxiedRequest, res: ServerResponse, hidden: ReadonlySet<string>) {
    this.request = request;
    this.res = res;
    this.hidden = hidden;
  }

  startAttempt(deployment: string): void {
    this.attempts += 1;
    this.deployment = deployment;
    this.attemptStartedAt = performance.now();
  }

  /** The attempt never left: this instance's breaker refused it. */
  undoAttempt(): void {
    this.attempts -= 1;
  }

  /** The token charge for the client's quota: real usage when known, none when no deployment was reached. */
  clientCharge(): number | undefined {
    return this.usage?.totalTokens ?? (this.attempts === 0 ? 0 : undefined);
  }

  get gatewayHeaders(): GatewayHeaders {
    return { requestId: this.request.requestId, deployment: this.deployment, attempts: this.attempts };
  }

  /** A deployment's answer starts flowing to the client: no failover after this. */
  startResponse(status: number, upstream: IncomingHttpHeaders): void {
    this.status = status;
    this.outcome = 'streaming';
    this.firstByteMs = Date.now() - this.request.startedAt;
    // No attempt follows: the bodies would otherwise be held for as long as a stream flows.
    this.request.body = NO_BODY;
    this.request.bodyWithUsage = undefined;
    writeUpstreamHead(this.res, status, upstream, this.gatewayHeaders, this.hidden);
  }

  /**
   * The answer flows to the client: `piping` settles when it is over, and `served` counts it. The
   * attempt loop's frames return now instead of staying suspended for the length of a stream (each
   * holds its generator, its context and its promises); what their `finally` blocks did waits in a
   * list (atEnd), run in the same order once `served` is done. Nothing is held per step but its closure.
   */
  answerPiping<T>(piping: Promise<T>, served: (piped: T) => Promise<void>): void {
    const afterwards: (() => unknown)[] = [];
    this.afterwards = afterwards;
    const over = (first: () => unknown) => inOrder([first, ...afterwards]);
    this.answering = piping.then(
      (piped) => over(() => served(piped)),
      (error: unknown) =>
        over(() => {
          throw error;
        }),
    );
  }

  /**
   * A `finally` step of the attempt loop: run now (its result to await), or, while an answer is piped,
   * queued to run in order once that answer is over (nothing to await now).
   */
  atEnd(step: () => unknown): unknown {
    if (!this.afterwards) return step();
    this.afterwards.push(step);
    return undefined;
  }

  /** Settles once the piped answer and the steps after it are done; undefined when none was piped. */
  get answered(): Promise<void> | undefined {
    return this.answering;
  }

  endResponse(piped: PipeResult): void {
    this.usage = piped.usage;
    this.outcome = piped.outcome;
  }

  /** The client's quota as it stands after this request was booked (or refused). */
  setQuotaHeaders(remaining: { tokens?: number; requests?: number }): void {
    setQuotaHeaders(this.res, remaining);
  }

  answer(answer: Answer): void {
    if ('relay' in answer) this.relay(answer.relay);
    else this.reject(answer.error);
  }

  /** Sends an upstream error response that was read whole: the deployment's own Azure-shaped body. */
  relay(failure: FailedAttempt): void {
    this.outcome = 'upstream-error';
    this.status = failure.status;
    // The body may have been cut at FAILED_BODY_LIMIT, so its length is recomputed rather than copied.
    const { 'content-length': _length, ...headers } = failure.headers ?? {};
    writeUpstreamHead(this.res, failure.status ?? 502, headers, this.gatewayHeaders, this.hidden);
    const { stateful } = this.request;
    this.res.end(stateful && failure.body ? withClientIds(failure.body, stateful.restored) : failure.body);
  }

  /** Answers with the gateway's own error. */
  reject(error: AzureError, outcome = error.status === 429 ? 'saturated' : 'failed'): void {
    this.outcome = outcome;
    this.status = error.status;
    if (this.attempts > 0) setAttemptHeaders(this.res, this.gatewayHeaders);
    sendError(this.res, error);
  }

  /** A bug inside the gateway: the client gets a 500 (or a cut stream), never a stack trace. */
  failedInside(error: Error, logger: Logger): void {
    this.outcome = 'error';
    logger.error('request failed inside the gateway', { requestId: this.request.requestId, error: error.message });
    if (!this.res.headersSent) sendError(this.res, errors.internal());
    else this.res.destroy();
  }

  /** The request's log line and metrics, once it is over. */
  finish(metrics: Metrics, logger: Logger): void {
    if (this.outcome === 'pending') this.outcome = 'client-closed';
    const { request } = this;
    const status = this.status ?? this.res.statusCode;
    // A 200 whose body broke off is not a served request: the outcome label says so (upstream-broke).
    // A batch line is not a client request: its lane counts it (spillway_background_lines_total).
    if (!request.background) metrics.requests.inc({ pool: request.pool.name, status: String(status), outcome: this.outcome });
    // Below info level the line would be built only to be dropped.
    if (!logger.isInfoEnabled()) return;
    logger.info('request', {
      requestId: request.requestId,
      client: request.client.name,
      pool: request.pool.name,
      operation: request.stateful?.name ?? request.operation,
      affinity: request.affinity?.host,
      lane: request.background ? 'background' : undefined,
      deployment: this.deployment,
      attempts: this.attempts,
      status,
      outcome: this.outcome,
      stream: request.stream,
      latencyMs: Date.now() - request.startedAt,
      firstByteMs: this.firstByteMs,
      estimatedTokens: request.estimatedTokens,
      promptTokens: this.usage?.promptTokens,
      completionTokens: this.usage?.completionTokens,
      totalTokens: this.usage?.totalTokens,
    });
  }
}

/** Each step after the one before, whatever it came to, as nested `finally` blocks: the last failure goes on. */
async function inOrder(steps: readonly (() => unknown)[]): Promise<void> {
  let failure: { error: unknown } | undefined;
  for (const step of steps) {
    try {
      await step();
    } catch (error) {
      failure = { error };
    }
  }
  if (failure) throw failure.error;
}
