/**
 * The admission benchmark's settings: the command line, the constants of every run, and what one
 * request costs (which sets the pool's capacity).
 */
import { parseArgs } from 'node:util';
import { countPromptTokens, estimateCost, parseRequest } from '../../shared/simulator/requests.ts';
import { estimateRequest } from '../../shared/tokens/index.ts';
import { promptText } from '../lib/scenario.ts';

export const HELP = `Admission benchmark: spillway admission against the seed's policy, at 90 % and 150 % of capacity

  npm run bench:admission [-- options]

  --window-ms N        the scaled "minute" of the simulator and the gateways (default 6000; multiple of 60)
  --gateway-window-ms N  diagnostic: give the gateways a different window than the simulator (default: --window-ms)
  --tpm N              token budget of each of the 3 deployments per window (default 27000)
  --rpm N              request budget of each deployment per window (default 1200: generous, tokens bind)
  --prompt-chars N     prompt length in characters (default 100)
  --max-tokens N       max_tokens of every request; the simulator generates exactly that many (default 200)
  --ttft-ms N          simulator latency: time to first token (default 30)
  --per-token-ms N     simulator latency per generated token (default 1)
  --loads LIST         offered loads as fractions of the summed capacity (default 0.9,1.5)
  --policies LIST      spillway,baseline (default both)
  --warmup-windows N   windows of load before the measured part of each phase (default 1)
  --warmup-load F      load of those windows (default: the phase's load, at most 1: the window is full and
                       evenly spread when the measured part begins)
  --windows N          measured windows per phase (default 3)
  --arrivals KIND      constant (default) or poisson (seeded)
  --probes N           honesty probes after each overload phase (default 5; 0 = none)
  --seed N             seed of Poisson arrivals (default 1)
  --no-doc             do not rewrite the results section of docs/admission.md
  --json FILE          also write the result here (always written to loadtest/results/)
  --strip-ratelimit-headers  diagnostic: the gateways reach the simulator through a proxy that drops its
                       x-ratelimit-* headers (so the gateways cannot learn from them)
  --keep-logs          copy the gateways' logs (LOG_LEVEL=warn: cooldowns, failed attempts) to loadtest/results/
  --help               this text

Exit codes: 0 the spillway targets passed, 99 one failed, 2 setup or run failure.
`;

export const API_VERSION = '2024-10-21';
export const DEPLOYMENT_IDS = ['a', 'b', 'c'] as const;
export const REGIONS = ['East US', 'Sweden Central', 'Japan East'];
export const GATEWAYS = 3;
export const ADMIN_KEY = 'admission-bench-admin-key';
/** One request may take this long before it is cut (the simulator answers within ~0.3 s). */
export const REQUEST_TIMEOUT_MS = 15_000;
/** After the phase ends, requests in flight get this long to finish; then they are cut. */
export const DRAIN_MS = 10_000;
/** Requests in flight at once (HTTP, both attempts); arrivals beyond it are dropped and counted as errors. */
export const MAX_IN_FLIGHT = 1000;
/** Bound on arrivals of one phase. */
export const MAX_ARRIVALS_PER_PHASE = 50_000;
/** Bursts sent at most to fill the pool before one probe. */
export const PROBE_FILL_BATCHES = 10;
/** Bound on one honesty probe series. */
export const PROBE_SERIES_CAP_MS = 40_000;

export type Policy = 'spillway' | 'baseline';
export const POLICY_LABEL: Record<Policy, string> = { spillway: 'spillway', baseline: 'baseline (seed)' };

export interface Settings {
  windowMs: number;
  /** The gateways' gateway.windowMs; equal to windowMs unless a diagnostic run sets it. */
  gatewayWindowMs: number;
  tpm: number;
  rpm: number;
  promptChars: number;
  maxTokens: number;
  ttftMs: number;
  perTokenMs: number;
  loads: number[];
  policies: Policy[];
  warmupWindows: number;
  /** Load of the warm-up windows as a fraction of capacity; undefined: min(phase load, 1). */
  warmupLoad: number | undefined;
  windows: number;
  /** Diagnostic: a proxy between the gateways and the simulator drops x-ratelimit-* response headers. */
  stripRatelimitHeaders: boolean;
  arrivals: 'constant' | 'poisson';
  probes: number;
  seed: number;
}

/** The three views of one request's cost, and what capacity follows from them. */
export interface Costs {
  /** The simulator's (Azure's) arrival estimate: ceil(prompt chars / 4) + max_tokens. */
  simulatorEstimate: number;
  /** The gateway's arrival estimate: tokenizer count with chat rules + max_tokens. */
  gatewayEstimate: number;
  /** What the simulator reports in usage (prompt_tokens + completion_tokens). */
  usage: number;
  /** Requests one deployment admits per window: floor(tpm / simulatorEstimate). */
  requestsPerWindowPerDeployment: number;
  /** Summed capacity in requests per second. */
  capacityRps: number;
}

export function parseSettings(values: Record<string, string | boolean | undefined>): Settings {
  const int = (name: string, fallback: number, min: number, max: number) => {
    const raw = values[name];
    const value = typeof raw === 'string' ? Number(raw) : fallback;
    if (!Number.isInteger(value) || value < min || value > max) throw new Error(`--${name} must be a whole number in ${min}..${max}`);
    return value;
  };
  const windowMs = int('window-ms', 6000, 600, 600_000);
  if (windowMs % 60 !== 0) throw new Error('--window-ms must be a multiple of 60 (the gateway cuts its window into 60 buckets)');
  const loads = (typeof values.loads === 'string' ? values.loads : '0.9,1.5').split(',').map((v) => Number(v.trim()));
  if (loads.some((l) => !(l > 0 && l <= 5))) throw new Error('--loads: fractions of capacity in (0, 5]');
  const policies = (typeof values.policies === 'string' ? values.policies : 'spillway,baseline')
    .split(',')
    .map((v) => v.trim()) as Policy[];
  if (policies.some((p) => p !== 'spillway' && p !== 'baseline') || policies.length === 0)
    throw new Error('--policies: spillway and/or baseline');
  const arrivals = typeof values.arrivals === 'string' ? values.arrivals : 'constant';
  const warmupLoad = typeof values['warmup-load'] === 'string' ? Number(values['warmup-load']) : undefined;
  if (warmupLoad !== undefined && !(warmupLoad > 0 && warmupLoad <= 5)) throw new Error('--warmup-load: a fraction of capacity in (0, 5]');
  if (arrivals !== 'constant' && arrivals !== 'poisson') throw new Error('--arrivals: constant or poisson');
  const gatewayWindowMs = int('gateway-window-ms', windowMs, 600, 600_000);
  if (gatewayWindowMs % 60 !== 0) throw new Error('--gateway-window-ms must be a multiple of 60');
  return {
    windowMs,
    gatewayWindowMs,
    tpm: int('tpm', 27_000, 1000, 10_000_000),
    rpm: int('rpm', 1200, 6, 1_000_000),
    promptChars: int('prompt-chars', 100, 1, 100_000),
    maxTokens: int('max-tokens', 200, 1, 100_000),
    ttftMs: int('ttft-ms', 30, 0, 10_000),
    perTokenMs: int('per-token-ms', 1, 0, 1000),
    loads,
    policies,
    warmupWindows: int('warmup-windows', 1, 0, 10),
    warmupLoad,
    stripRatelimitHeaders: values['strip-ratelimit-headers'] === true,
    windows: int('windows', 3, 1, 20),
    arrivals,
    probes: int('probes', 5, 0, 50),
    seed: int('seed', 1, 0, 2 ** 31),
  };
}

export function costsOf(settings: Settings, body: Record<string, unknown>): Costs {
  const parsed = parseRequest('chat/completions', body);
  if (!parsed.ok) throw new Error('the benchmark request does not parse as the simulator parses it');
  const simulatorEstimate = estimateCost(parsed.request, 16);
  const usage = countPromptTokens(parsed.request, 'o200k_base') + settings.maxTokens;
  const gatewayEstimate = estimateRequest('chat/completions', body, { encoding: 'o200k_base', defaultMaxTokens: 1024 }).total;
  const requestsPerWindowPerDeployment = Math.floor(settings.tpm / simulatorEstimate);
  const capacityRps = (DEPLOYMENT_IDS.length * requestsPerWindowPerDeployment * 1000) / settings.windowMs;
  return { simulatorEstimate, gatewayEstimate, usage, requestsPerWindowPerDeployment, capacityRps };
}

export interface RunOptions {
  settings: Settings;
  /** --json FILE */
  json: string | undefined;
  keepLogs: boolean;
  noDoc: boolean;
  /** The command as typed, for the report. */
  command: string;
}

/** The options, or the exit code when the run stops here (--help). */
export function parseOptions(): RunOptions | number {
  const { values } = parseArgs({
    options: {
      'window-ms': { type: 'string' },
      'gateway-window-ms': { type: 'string' },
      'keep-logs': { type: 'boolean' },
      tpm: { type: 'string' },
      rpm: { type: 'string' },
      'prompt-chars': { type: 'string' },
      'max-tokens': { type: 'string' },
      'ttft-ms': { type: 'string' },
      'per-token-ms': { type: 'string' },
      loads: { type: 'string' },
      policies: { type: 'string' },
      'warmup-windows': { type: 'string' },
      'warmup-load': { type: 'string' },
      'strip-ratelimit-headers': { type: 'boolean' },
      windows: { type: 'string' },
      arrivals: { type: 'string' },
      probes: { type: 'string' },
      seed: { type: 'string' },
      'no-doc': { type: 'boolean' },
      json: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  return {
    settings: parseSettings(values),
    json: values.json,
    keepLogs: values['keep-logs'] ?? false,
    noDoc: values['no-doc'] ?? false,
    command: `npm run bench:admission${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
  };
}

/** The one request every phase sends, and its costs; throws when a deployment cannot take even one. */
export function benchmarkRequest(settings: Settings): { body: Buffer; costs: Costs } {
  const bodyObject = { messages: [{ role: 'user', content: promptText(settings.promptChars) }], max_tokens: settings.maxTokens };
  const costs = costsOf(settings, bodyObject);
  if (costs.requestsPerWindowPerDeployment < 1) throw new Error('one request costs more than a deployment’s whole budget: raise --tpm');
  return { body: Buffer.from(JSON.stringify(bodyObject)), costs };
}

/** Bounded: the phases, their drains and probes, plus start-up and stop; the hard cap ends everything. */
export function hardCapMs(settings: Settings): number {
  const phases = settings.loads.length * settings.policies.length;
  const overloadPhases = settings.loads.filter((l) => l > 1).length * settings.policies.length;
  const plannedMs = phases * (phaseMs(settings) + 3000) + (settings.probes > 0 ? overloadPhases * 15_000 : 0) + 30_000;
  return plannedMs + phases * DRAIN_MS + overloadPhases * PROBE_SERIES_CAP_MS + 60_000;
}

/** One phase: its warm-up windows and its measured windows. */
export function phaseMs(settings: Settings): number {
  return (settings.warmupWindows + settings.windows) * settings.windowMs;
}

/** Each phase has a pool of its own: its own Redis key space. */
export function poolName(policy: Policy, load: number): string {
  return `${policy}-${Math.round(load * 100)}`;
}

export function requestPath(pool: string): string {
  return `/openai/deployments/${encodeURIComponent(pool)}/chat/completions?api-version=${API_VERSION}`;
}

export function loadLabel(load: number): string {
  return `${Math.round(load * 100)} %`;
}
