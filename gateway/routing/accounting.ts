/**
 * What a finished attempt costs in the windows, and what Azure told us about its own.
 *
 * Azure's Standard limiter charges each request its arrival estimate and keeps it (see
 * ../shared/reference/azure-openai-api.md §2: "added to a running token count … reset each minute";
 * rejected requests count too), so a Standard deployment's window keeps the reservation, raised to
 * the real usage when that was larger. A provisioned (PTU) deployment corrects its utilization to the
 * actual cost on completion, so there the real usage replaces the reservation. Failed and aborted
 * attempts keep their reservation in both: Azure charged them on arrival. The client's quota is
 * exact in tokens: the real usage when known, none when no deployment was ever reached (the request
 * still counts against the client's rpm).
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Lease, WindowObservation } from '../../shared/store/types.ts';
import type { DeploymentConfig } from '../../shared/config/schema.ts';
import { shortWindowLimit } from '../../shared/store/constants.ts';
import { numberHeader, UTILIZATION_HEADER } from '../upstream/headers.ts';
import type { Usage } from '../upstream/usage.ts';

/** Charge for the deployment's window once the attempt is over; undefined keeps the reservation. */
export function deploymentCharge(lease: Lease, usage: Usage | undefined, provisioned: boolean): number | undefined {
  if (!usage) return undefined;
  // Provisioned utilization does not count prompt tokens served from the cache (azure-openai-api.md).
  return provisioned ? usage.totalTokens - (usage.cachedTokens ?? 0) : Math.max(lease.tokens, usage.totalTokens);
}

/** Below this share of a budget left, a deployment's own figures are worth a store round trip. */
const OBSERVE_BELOW_SHARE = 0.25;

/**
 * True when the deployment's figures say it is close to its limit: only then can they change an
 * admission decision, so only then are they sent to the store (off the request's latency path).
 */
export function worthObserving(observed: WindowObservation | undefined): observed is WindowObservation {
  if (!observed) return false;
  const { tpm, rpm, remainingTokens, remainingRequests } = observed;
  if (tpm !== undefined && remainingTokens !== undefined && remainingTokens < tpm * OBSERVE_BELOW_SHARE) return true;
  return rpm !== undefined && remainingRequests !== undefined && remainingRequests < shortWindowLimit(rpm) * OBSERVE_BELOW_SHARE;
}

/**
 * What the deployment's headers say about its window: `x-ratelimit-remaining-*` (Standard) or the
 * PTU utilization percentage, as remaining tokens of its tpm. Other clients may share the deployment.
 */
export function observe(headers: IncomingHttpHeaders, deployment: DeploymentConfig): WindowObservation | undefined {
  const { tpm, rpm } = deployment;
  if (tpm === undefined && rpm === undefined) return undefined;
  let remainingTokens = numberHeader(headers, 'x-ratelimit-remaining-tokens');
  const remainingRequests = numberHeader(headers, 'x-ratelimit-remaining-requests');
  const utilization = numberHeader(headers, UTILIZATION_HEADER);
  if (remainingTokens === undefined && utilization !== undefined && tpm !== undefined) {
    remainingTokens = Math.max(0, Math.floor(tpm * (1 - utilization / 100)));
  }
  if (remainingTokens === undefined && remainingRequests === undefined) return undefined;
  return { tpm, rpm, remainingTokens, remainingRequests };
}
