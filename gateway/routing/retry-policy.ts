/**
 * Which upstream answers another deployment may well do better with, and which count against the
 * deployment's circuit.
 */
import type { AttemptOutcome } from '../upstream/forwarder.ts';

/** Statuses after which another deployment may well succeed. 400/401/403 and a client's 404 are the client's. */
const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);
/** Statuses that count against a destination's circuit (a 429 is a cooldown, not a fault). */
const FAULT_STATUS = new Set([408, 500, 502, 503, 504]);

/** How long a deployment that Azure says does not exist stays out of rotation. */
export const MISCONFIGURED_COOLDOWN_MS = 60_000;
/** A failed attempt's body is kept to hand to the client if no other deployment succeeds. */
export const FAILED_BODY_LIMIT = 64 * 1024;

/** A status whose body is read rather than piped: one to fail over on, or a 404 that may be ours (see isMissingDeployment). */
export function mayFailOver(status: number): boolean {
  return RETRYABLE_STATUS.has(status) || status === 404;
}

/** A 404 that says the configured deployment does not exist upstream: our config's fault, not the client's. */
export function isMissingDeployment(status: number, body: Buffer): boolean {
  return status === 404 && body.includes('DeploymentNotFound');
}

/** True for outcomes that count against the destination's breaker. */
export function isFault(outcome: AttemptOutcome): boolean {
  return outcome.kind === 'error' || FAULT_STATUS.has(outcome.response.statusCode ?? 0);
}
