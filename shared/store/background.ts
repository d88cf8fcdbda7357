/**
 * The budgets a background request (a Batch API line) sees: every limit cut to (1 − reserve) of itself,
 * so interactive requests always find the reserve free. Same rule as reducedLimit in lua/acquire.lua.
 */
import { shortWindowLimit } from './constants.ts';
import type { BackgroundAdmission, DeploymentBudget } from './types.ts';

/** The largest reserve there is (config: background.reserve ≤ 0.95). */
const MAX_RESERVE = 0.95;

/** Budgets as the admission checks them: tpm, rpm, and the short window's limit (undefined: unlimited). */
export interface AdmissionLimits {
  tpm: number | undefined;
  rpm: number | undefined;
  /** Requests per short window; undefined with rpm: ceil(rpm / 6), as for interactive requests. */
  shortLimit: number | undefined;
  /** A limit floored to 0: this deployment takes no background request at all. */
  never: boolean;
}

/** Share of each budget background work may use: 1 − reserve, the reserve kept within [0, MAX_RESERVE]. */
export function backgroundShare(admission: BackgroundAdmission): number {
  const reserve = Number.isFinite(admission.reserve) ? admission.reserve : 0;
  return 1 - Math.min(MAX_RESERVE, Math.max(0, reserve));
}

/**
 * floor(share × limit). The relative nudge keeps a product such as 0.71 × 100 = 70.99999999999999 from
 * flooring a whole request or token too low; Lua computes the same doubles.
 */
export function reducedLimit(limit: number, share: number): number {
  return Math.floor(share * limit * (1 + 1e-9));
}

export function interactiveLimits(budget: DeploymentBudget): AdmissionLimits {
  return { tpm: budget.tpm, rpm: budget.rpm, shortLimit: undefined, never: false };
}

export function backgroundLimits(budget: DeploymentBudget, share: number): AdmissionLimits {
  const tpm = budget.tpm === undefined ? undefined : reducedLimit(budget.tpm, share);
  const rpm = budget.rpm === undefined ? undefined : reducedLimit(budget.rpm, share);
  const shortLimit = budget.rpm === undefined ? undefined : reducedLimit(shortWindowLimit(budget.rpm), share);
  const never = (tpm !== undefined && tpm < 1) || (rpm !== undefined && rpm < 1) || (shortLimit !== undefined && shortLimit < 1);
  return { tpm, rpm, shortLimit, never };
}
