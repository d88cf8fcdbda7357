import type { Lease, WindowObservation } from './types.ts';

/**
 * Numbers both stores share. The Lua includes repeat them (lua/includes/*.lua); change both together.
 */

/** A usage window is cut into this many buckets: 1 s buckets for the production 60 s window. */
export const WINDOW_BUCKETS = 60;

/** The short request window (Azure's 10 s RPM window) is the last sixth of the buckets. */
export const SHORT_WINDOW_BUCKETS = 10;

/** How many requests the short window admits for an `rpm` budget. */
export function shortWindowLimit(rpm: number): number {
  return Math.ceil(rpm / 6);
}

/**
 * How long a half-open circuit is remembered after its open period ended when nobody probes or closes
 * it. Without a limit an idle pool would keep circuit state in Redis forever.
 */
export const HALF_OPEN_MEMORY_MS = 24 * 60 * 60 * 1000;

/**
 * How long the moment of a deployment's latest manual reset is remembered: instances forget the
 * ejections in a row they counted before it (gateway/routing/outlier.ts). A count older than a day
 * has long decayed (it drops by one per baseEjectionMs in rotation).
 */
export const RESET_MEMORY_MS = 24 * 60 * 60 * 1000;

/**
 * How long the moment a deployment's slow start began is remembered, and the longest slow start there is
 * (the config's slowStartMs is at most this): the state hash is kept until then.
 */
export const SLOW_START_MEMORY_MS = 600_000;

export const DEFAULT_WINDOW_MS = 60_000;
export const DEFAULT_KEY_PREFIX = 'spillway:';

/**
 * Most leases one renew script carries. RedisStore splits a renewal into calls of at most this many and
 * sends each after the previous one answered, so Redis serves other clients between them: one call runs
 * well under a millisecond (measured in loadtest/scale/store-cost.ts), whatever is in flight.
 */
export const RENEW_BATCH = 200;

/** Window keys and the round-robin cursor expire after this many windows without bookings. */
export const IDLE_WINDOWS_BEFORE_EXPIRY = 2;

/** Buckets must be whole milliseconds so that both stores and Lua compute bucket edges exactly alike. */
export function validWindowMs(windowMs: number | undefined): number {
  const value = windowMs ?? DEFAULT_WINDOW_MS;
  if (!Number.isSafeInteger(value) || value <= 0 || value % WINDOW_BUCKETS !== 0) {
    throw new Error(`store windowMs must be a positive multiple of ${WINDOW_BUCKETS} ms, got ${String(windowMs)}`);
  }
  return value;
}

/** Token counts are booked as whole, non-negative numbers. */
export function wholeTokens(tokens: number): number {
  return Number.isFinite(tokens) && tokens > 0 ? Math.ceil(tokens) : 0;
}

/** Durations are whole milliseconds; anything not a positive number counts as 0. */
export function wholeMs(durationMs: number): number {
  return Number.isFinite(durationMs) && durationMs > 0 ? Math.ceil(durationMs) : 0;
}

/**
 * What a deployment's own counter says is used of `limit` when `remaining` is left (Azure's
 * x-ratelimit-remaining-* headers): a whole number >= 0, or undefined when either figure is missing or
 * not a finite number. A negative remaining counts as 0; a remaining above the limit means nothing used.
 */
export function observedUse(limit: number | undefined, remaining: number | undefined): number | undefined {
  if (limit === undefined || remaining === undefined || !Number.isFinite(limit) || !Number.isFinite(remaining)) return undefined;
  return Math.max(0, Math.ceil(limit - Math.max(0, remaining)));
}

/**
 * What a deployment's observation says it has used: tokens of its window, requests of its short
 * window. Either is undefined when the deployment did not say.
 */
export function observedCounts(observed: WindowObservation | undefined): {
  usedTokens: number | undefined;
  usedRequests: number | undefined;
} {
  const rpm = observed?.rpm;
  return {
    usedTokens: observedUse(observed?.tpm, observed?.remainingTokens),
    usedRequests: rpm === undefined ? undefined : observedUse(shortWindowLimit(rpm), observed?.remainingRequests),
  };
}

/** Lease id of no lease (lease ids are UUIDs): a release of it only applies an observation. */
const OBSERVATION_ONLY_LEASE = 'observation-only';

/** The lease `observe` releases: one that cannot exist, so the release changes nothing but applies the observation. */
export function observationLease(pool: string, deploymentId: string): Lease {
  return { pool, deploymentId, leaseId: OBSERVATION_ONLY_LEASE, bucket: 0, tokens: 0, probe: false };
}
