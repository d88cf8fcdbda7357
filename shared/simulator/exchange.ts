/**
 * One request to a known deployment, from arrival to the connection's 'close': it counts the
 * request in, picks its outcome once, applies faults and the rate limiter, stops timers, and
 * settles PTU usage. Chat, completions and embeddings (api-handler.ts) and the Responses and
 * Conversations APIs (responses-api/) answer through it, so faults, limits and stats behave alike.
 */
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { deliver, type Cut, type DeliveryPlan } from './delivery.ts';
import type { DeploymentRuntime } from './deployments.ts';
import { faultReply, rateLimitReached, retryAfterSeconds, type ErrorReply, type OperationName } from './errors.ts';
import { sendJson } from './http-utils.ts';
import type { Outcome } from './stats.ts';
import type { Fault, RecordedRequest } from './types.ts';

/** Headers on every answer; Azure's apim-request-id and x-ms-client-request-id are equal in captures. */
export function baseHeaders(requestId: string, deployment: DeploymentRuntime | null): string[] {
  const headers = ['apim-request-id', requestId, 'x-request-id', randomUUID(), 'x-ms-client-request-id', requestId];
  if (deployment !== null) {
    headers.push(
      'x-ms-region',
      deployment.region,
      'azureml-model-session',
      deployment.modelSession,
      'x-ms-deployment-name',
      deployment.name,
    );
  }
  return headers;
}

export function sendError(res: ServerResponse, reply: ErrorReply, headers: string[]): void {
  if (reply.retryAfterMs !== undefined) {
    headers.push('retry-after', String(retryAfterSeconds(reply.retryAfterMs)), 'retry-after-ms', String(Math.ceil(reply.retryAfterMs)));
  }
  sendJson(res, reply.status, headers, reply.body);
}

/** What a 429 names besides the deployment: the operation and the api-version (v1 when none). */
export interface LimitContext {
  operation: OperationName;
  apiVersion: string | null;
}

/** How a 200 is timed and cut: the pieces, their ticks, and the fault that shapes them. */
export interface ResponsePlan {
  pieces: string[];
  tickEnds: number[];
  firstTickMs: number;
  tickIntervalMs: number;
  stream: boolean;
  /** A stall/reset fault: streams are cut after N events, JSON bodies in their middle. */
  cutFault: Extract<Fault, { kind: 'stall-mid-stream' | 'reset-mid-stream' }> | null;
}

export class Exchange {
  readonly deployment: DeploymentRuntime;
  readonly record: RecordedRequest;
  private readonly res: ServerResponse;
  private cancelDelivery: (() => void) | null = null;
  /** Set when the simulator itself dropped the connection (a fault), so 'close' is not an abort. */
  private resetOnPurpose = false;
  private estimate = 0;
  private admitted = false;
  /** A background response settles its PTU usage itself, when its generation ends. */
  private settleLater = false;
  private promptTokens = 0;
  private completionTokens = 0;
  private readonly endListeners: ((outcome: Outcome) => void)[] = [];

  constructor(deployment: DeploymentRuntime, res: ServerResponse, record: RecordedRequest) {
    this.deployment = deployment;
    this.res = res;
    this.record = record;
    deployment.stats.begin(record);
    res.once('close', () => this.onClose());
  }

  /** Called once with the request's outcome when the connection closes. */
  onEnd(listener: (outcome: Outcome) => void): void {
    this.endListeners.push(listener);
  }

  sendError(reply: ErrorReply, exhausted = false): void {
    const headers = baseHeaders(this.record.requestId, this.deployment);
    this.deployment.limiter.appendHeaders(headers, performance.now(), exhausted);
    sendError(this.res, reply, headers);
  }

  /** Faults that replace the response entirely; true when one did. */
  applyTerminalFault(fault: Fault, context: LimitContext): boolean {
    switch (fault.kind) {
      case 'storm-429':
      case 'status':
        if (fault.kind === 'storm-429' || fault.status === 429) {
          this.sendError(this.rateLimitReply('token', fault.retryAfterMs ?? 1000, context), true);
        } else {
          this.sendError(faultReply(fault.status, this.record.requestId, fault.retryAfterMs));
        }
        return true;
      case 'reset':
        this.resetOnPurpose = true;
        // An RST, not a polite FIN: the client sees ECONNRESET as from a dropped backend.
        this.res.socket?.resetAndDestroy();
        return true;
      case 'hang':
        return true; // Never answer; 'close' will count the abort when the client gives up.
      default:
        return false;
    }
  }

  /** Takes the deployment's fault for this request; true when it already answered (or never will). */
  takeTerminalFault(context: LimitContext): { answered: boolean; fault: Fault | null } {
    const fault = this.deployment.faults.take();
    return { answered: fault !== null && this.applyTerminalFault(fault, context), fault };
  }

  /** The rate limiter's decision on an estimate of `estimate` tokens; answers the 429 itself. */
  admit(estimate: number, context: LimitContext): boolean {
    const admission = this.deployment.limiter.admit(estimate, performance.now());
    if (!admission.admitted) {
      this.sendError(this.rateLimitReply(admission.limit, admission.retryAfterMs, context));
      return false;
    }
    this.admitted = true;
    this.estimate = estimate;
    return true;
  }

  /** Tokens the stats count (and PTU settles at) when the response is served. */
  setUsage(promptTokens: number, completionTokens: number): void {
    this.promptTokens = promptTokens;
    this.completionTokens = completionTokens;
  }

  /** The caller settles the limiter itself (background responses, when their generation ends). */
  deferSettlement(): number {
    this.settleLater = true;
    return this.estimate;
  }

  /** The 200 (or any status), on the plan's schedule, shaped by slow-first-byte or mid-stream faults. */
  deliver(status: number, plan: ResponsePlan, fault: Fault | null): void {
    const headers = baseHeaders(this.record.requestId, this.deployment);
    this.deployment.limiter.appendHeaders(headers, performance.now());
    const extraDelayMs = fault?.kind === 'slow-first-byte' ? fault.delayMs : 0;
    let { pieces, tickEnds } = plan;
    let cut: Cut | null = null;
    if (plan.stream) {
      headers.push('content-type', 'text/event-stream; charset=utf-8', 'cache-control', 'no-cache');
      if (plan.cutFault !== null) cut = toCut(plan.cutFault, plan.cutFault.afterChunks);
    } else {
      const body = pieces.join('');
      headers.push('content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)));
      pieces = [body];
      tickEnds = [1];
      if (plan.cutFault !== null) {
        // A JSON body has no chunks: the cut falls in its middle, after the headers promised all of it.
        const half = Math.floor(body.length / 2);
        pieces = [body.slice(0, half), body.slice(half)];
        tickEnds = [2];
        cut = toCut(plan.cutFault, 1);
      }
    }
    const deliveryPlan: DeliveryPlan = {
      status,
      headers,
      pieces,
      tickEnds,
      firstTickMs: plan.firstTickMs + extraDelayMs,
      tickIntervalMs: plan.stream ? plan.tickIntervalMs : 0,
      cut,
    };
    this.cancelDelivery = deliver(this.res, deliveryPlan, () => {
      this.resetOnPurpose = true;
    });
  }

  /** A JSON answer at once (calls by id): still subject to slow-first-byte and mid-body cuts. */
  deliverJson(status: number, body: string, fault: Fault | null): void {
    this.deliver(
      status,
      { pieces: [body], tickEnds: [1], firstTickMs: 0, tickIntervalMs: 0, stream: false, cutFault: cutFaultOf(fault) },
      fault,
    );
  }

  private rateLimitReply(limit: 'token' | 'call', retryAfterMs: number, context: LimitContext): ErrorReply {
    return rateLimitReached({
      deployment: this.deployment.name,
      model: this.deployment.model,
      region: this.deployment.region,
      limit,
      operation: context.operation,
      apiVersion: context.apiVersion ?? 'v1',
      retryAfterMs,
    });
  }

  private onClose(): void {
    this.cancelDelivery?.();
    this.cancelDelivery = null;
    const res = this.res;
    let outcome: Outcome;
    if (res.writableFinished) {
      const status = res.statusCode;
      outcome = status >= 200 && status < 300 ? 'served' : status === 429 ? 'throttled' : 'failed';
    } else {
      outcome = this.resetOnPurpose ? 'failed' : 'aborted';
    }
    this.record.status = res.headersSent ? res.statusCode : 0;
    const served = outcome === 'served';
    if (this.admitted && !this.settleLater) {
      // PTU: replace the arrival estimate by what the request really cost (the prompt alone if cut short).
      const actual = this.promptTokens + (served ? this.completionTokens : 0);
      this.deployment.limiter.settle(this.estimate, actual, performance.now());
    }
    this.deployment.stats.end(outcome, served ? this.promptTokens : 0, served ? this.completionTokens : 0);
    for (const listener of this.endListeners) listener(outcome);
  }
}

export function cutFaultOf(fault: Fault | null): Extract<Fault, { kind: 'stall-mid-stream' | 'reset-mid-stream' }> | null {
  return fault?.kind === 'stall-mid-stream' || fault?.kind === 'reset-mid-stream' ? fault : null;
}

function toCut(fault: Extract<Fault, { kind: 'stall-mid-stream' | 'reset-mid-stream' }>, afterPieces: number): Cut {
  if (fault.kind === 'reset-mid-stream') return { afterPieces, action: 'reset' };
  return fault.stallMs === undefined ? { afterPieces, action: 'stall' } : { afterPieces, action: 'stall', stallMs: fault.stallMs };
}
