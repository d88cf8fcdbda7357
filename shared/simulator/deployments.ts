/**
 * The live state of one simulated deployment: its settings with defaults applied, its limiter,
 * its fault slot and its counters.
 */
import { randomBytes } from 'node:crypto';
import { FaultSlot } from './faults.ts';
import { createLimiter, type DeploymentLimiter } from './rate-limits.ts';
import { systemFingerprint } from './responses.ts';
import { StatsCounter } from './stats.ts';
import { encodingForModel, type EncodingName } from './tokens.ts';
import type { LatencyModel, SimDeployment, SimulatorOptions } from './types.ts';

export const DEFAULT_MODEL = 'gpt-4o-2024-08-06';
export const DEFAULT_REGION = 'East US';
export const DEFAULT_COMPLETION_TOKENS = 20;

export interface DeploymentRuntime {
  name: string;
  model: string;
  region: string;
  encoding: EncodingName;
  latency: LatencyModel;
  completionTokens: number;
  limiter: DeploymentLimiter;
  faults: FaultSlot;
  stats: StatsCounter;
  /** Stable per deployment, like Azure's. */
  systemFingerprint: string;
  /** The azureml-model-session header, e.g. 'gpt-4o-2024-08-06-1a2b3c4d'. */
  modelSession: string;
}

export function createDeploymentRuntime(deployment: SimDeployment, options: SimulatorOptions): DeploymentRuntime {
  const model = deployment.model ?? DEFAULT_MODEL;
  return {
    name: deployment.name,
    model,
    region: deployment.region ?? DEFAULT_REGION,
    encoding: encodingForModel(model),
    latency: deployment.latency ?? options.latency ?? { ttftMs: 0, perTokenMs: 0 },
    completionTokens: deployment.completionTokens ?? DEFAULT_COMPLETION_TOKENS,
    limiter: createLimiter(deployment, options.windowMs ?? 60_000, options.countRejected ?? true),
    faults: new FaultSlot(),
    stats: new StatsCounter(),
    systemFingerprint: systemFingerprint(),
    modelSession: `${model}-${randomBytes(4).toString('hex')}`,
  };
}
