/**
 * The background benchmark's settings: the command line, the constants of every run, and what an
 * interactive request and a batch line cost (which sets the pool's capacity and the batch's ideal time).
 */
import { parseArgs } from 'node:util';
import { countPromptTokens, estimateCost, parseRequest } from '../../shared/simulator/requests.ts';
import { estimateRequest } from '../../shared/tokens/index.ts';
import { promptText } from '../lib/scenario.ts';

export const HELP = `Background benchmark: interactive load at 70 % of a pool's capacity, alone and with a 2 000-line batch queued

  npm run bench:background [-- options]

  --window-ms N          the scaled "minute" of the simulator and the gateways (default 6000; multiple of 60)
  --tpm N                token budget of each of the 3 deployments per window (default 150000)
  --rpm N                request budget of each deployment per window (default 6000: generous, tokens bind)
  --load F               interactive load as a fraction of the pool's capacity (default 0.7)
  --reserve F            background.reserve: the share of every budget batch lines never take (default 0.1,
                         so that background can lift the pool from the load toward 1 − reserve)
  --lines N              lines of the batch (default 2000)
  --prompt-chars N       interactive request: prompt length in characters (default 100)
  --max-tokens N         interactive request: max_tokens, all generated (default 975)
  --line-prompt-chars N  batch line: prompt length in characters (default 400)
  --line-max-tokens N    batch line: max_tokens, all generated (default 200)
  --ttft-ms N            simulator latency: time to first token (default 30)
  --per-token-ms F       simulator latency per generated token (default 0.2)
  --concurrency N        background.concurrency: lines per instance per pool (default 4)
  --pool-concurrency N   background.poolConcurrency: lines of all instances per pool (default 32)
  --rounds N             rounds; each has one phase alone and one with the batch, their order alternating
                         (alone first in odd rounds, the batch first in even ones) (default 2)
  --warmup-windows N     windows of interactive load before each phase's measured part (default 1)
  --alone-windows N      measured windows of a phase alone (default 6)
  --batch-cap-s N        hard cap of a phase with the batch, from the batch's creation (default 150)
  --alone-only           run the phases alone only (no batch)
  --no-doc               do not rewrite the results section of docs/background.md
  --json FILE            also write the result here
  --results-dir DIR      where the result (and --keep-logs' logs) go (default loadtest/results/)
  --keep-logs            copy the gateways' logs (LOG_LEVEL=warn) to loadtest/results/
  --help                 this text

Exit codes: 0 the targets passed, 99 one failed (or the batch phases could not run), 2 setup or run failure.
`;

export const API_VERSION = '2024-10-21';
export const DEPLOYMENT_IDS = ['a', 'b', 'c'] as const;
export const REGIONS = ['East US', 'Sweden Central', 'Japan East'];
export const GATEWAYS = 3;
export const ADMIN_KEY = 'background-bench-admin-key';
/** How often the batch's status is read while it runs. */
export const BATCH_POLL_MS = 250;
/** Bound on the upload of the input file and on reading the output back. */
export const FILE_TIMEOUT_MS = 60_000;
/** After a phase ends, the start-up and the stop of each phase, the output check: slack of the hard cap. */
export const PHASE_SLACK_MS = 40_000;

export type PhaseKind = 'alone' | 'batch';
export const KIND_LABEL: Record<PhaseKind, string> = { alone: 'alone', batch: 'with batch' };

export interface Settings {
  windowMs: number;
  tpm: number;
  rpm: number;
  load: number;
  reserve: number;
  lines: number;
  promptChars: number;
  maxTokens: number;
  linePromptChars: number;
  lineMaxTokens: number;
  ttftMs: number;
  perTokenMs: number;
  concurrency: number;
  poolConcurrency: number;
  rounds: number;
  warmupWindows: number;
  aloneWindows: number;
  batchCapMs: number;
  aloneOnly: boolean;
}

/** One request's three costs: the simulator's (Azure's) arrival estimate, the gateway's, and the usage reported. */
export interface RequestCosts {
  simulatorEstimate: number;
  gatewayEstimate: number;
  usage: number;
}

export interface Costs {
  interactive: RequestCosts;
  line: RequestCosts;
  /** The pool's summed token budget per second (3 × tpm per window). */
  capacityTokensPerSecond: number;
  /** Interactive requests per second at 100 %: whole requests per window per deployment, summed. */
  capacityRps: number;
  /** The interactive arrival rate: load × capacityRps. */
  interactiveRps: number;
  /** The batch's ideal time as planned: lines × line usage ÷ ((1 − reserve − load) × capacity), s. */
  plannedIdealSeconds: number;
}

export interface RunOptions {
  settings: Settings;
  json: string | undefined;
  resultsDir: string | undefined;
  keepLogs: boolean;
  noDoc: boolean;
  command: string;
}

function parseSettings(values: Record<string, string | boolean | undefined>): Settings {
  const number = (name: string, fallback: number, min: number, max: number, integer = true) => {
    const raw = values[name];
    const value = typeof raw === 'string' ? Number(raw) : fallback;
    if (!Number.isFinite(value) || (integer && !Number.isInteger(value)) || value < min || value > max)
      throw new Error(`--${name} must be a ${integer ? 'whole ' : ''}number in ${min}..${max}`);
    return value;
  };
  const windowMs = number('window-ms', 6000, 600, 600_000);
  if (windowMs % 60 !== 0) throw new Error('--window-ms must be a multiple of 60 (the gateway cuts its window into 60 buckets)');
  const load = number('load', 0.7, 0.05, 1, false);
  const reserve = number('reserve', 0.1, 0, 0.95, false);
  if (load >= 1 - reserve) throw new Error('--load must stay below 1 − --reserve, or the batch has no room at all');
  return {
    windowMs,
    tpm: number('tpm', 150_000, 1000, 10_000_000),
    rpm: number('rpm', 6000, 6, 1_000_000),
    load,
    reserve,
    lines: number('lines', 2000, 1, 50_000),
    promptChars: number('prompt-chars', 100, 1, 100_000),
    maxTokens: number('max-tokens', 975, 1, 100_000),
    linePromptChars: number('line-prompt-chars', 400, 1, 100_000),
    lineMaxTokens: number('line-max-tokens', 200, 1, 100_000),
    ttftMs: number('ttft-ms', 30, 0, 10_000),
    perTokenMs: number('per-token-ms', 0.2, 0, 1000, false),
    concurrency: number('concurrency', 4, 1, 256),
    poolConcurrency: number('pool-concurrency', 32, 1, 10_000),
    rounds: number('rounds', 2, 1, 10),
    warmupWindows: number('warmup-windows', 1, 0, 10),
    aloneWindows: number('alone-windows', 6, 1, 50),
    batchCapMs: number('batch-cap-s', 150, 5, 1800) * 1000,
    aloneOnly: values['alone-only'] === true,
  };
}

/** The options, or the exit code when the run stops here (--help). */
export function parseOptions(argv = process.argv.slice(2)): RunOptions | number {
  const { values } = parseArgs({
    args: argv,
    options: {
      'window-ms': { type: 'string' },
      tpm: { type: 'string' },
      rpm: { type: 'string' },
      load: { type: 'string' },
      reserve: { type: 'string' },
      lines: { type: 'string' },
      'prompt-chars': { type: 'string' },
      'max-tokens': { type: 'string' },
      'line-prompt-chars': { type: 'string' },
      'line-max-tokens': { type: 'string' },
      'ttft-ms': { type: 'string' },
      'per-token-ms': { type: 'string' },
      concurrency: { type: 'string' },
      'pool-concurrency': { type: 'string' },
      rounds: { type: 'string' },
      'warmup-windows': { type: 'string' },
      'alone-windows': { type: 'string' },
      'batch-cap-s': { type: 'string' },
      'alone-only': { type: 'boolean' },
      'no-doc': { type: 'boolean' },
      json: { type: 'string' },
      'results-dir': { type: 'string' },
      'keep-logs': { type: 'boolean' },
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
    resultsDir: values['results-dir'],
    keepLogs: values['keep-logs'] ?? false,
    noDoc: values['no-doc'] ?? false,
    command: `npm run bench:background${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`,
  };
}

/** The body of every interactive request (Azure style: the pool is in the path). */
export function interactiveBody(settings: Settings): Record<string, unknown> {
  return { messages: [{ role: 'user', content: promptText(settings.promptChars) }], max_tokens: settings.maxTokens };
}

/** The body of batch line `index` (OpenAI style: `model` names the pool); every line costs the same. */
export function lineBody(settings: Settings, pool: string, index: number): Record<string, unknown> {
  const prompt = `${index} ${promptText(settings.linePromptChars)}`.slice(0, settings.linePromptChars);
  return { model: pool, messages: [{ role: 'user', content: prompt }], max_tokens: settings.lineMaxTokens };
}

function requestCosts(body: Record<string, unknown>): RequestCosts {
  const parsed = parseRequest('chat/completions', body);
  if (!parsed.ok) throw new Error('a benchmark request does not parse as the simulator parses it');
  const maxTokens = Number(body.max_tokens);
  return {
    simulatorEstimate: estimateCost(parsed.request, 16),
    gatewayEstimate: estimateRequest('chat/completions', body, { encoding: 'o200k_base', defaultMaxTokens: 1024 }).total,
    usage: countPromptTokens(parsed.request, 'o200k_base') + maxTokens,
  };
}

/** The costs and the capacity they give; throws when the settings leave no sensible run. */
export function costsOf(settings: Settings): Costs {
  const interactive = requestCosts(interactiveBody(settings));
  const line = requestCosts(lineBody(settings, 'pool', 0));
  const perDeployment = Math.floor(settings.tpm / interactive.simulatorEstimate);
  if (perDeployment < 1) throw new Error('one interactive request costs more than a deployment’s whole budget: raise --tpm');
  if (line.simulatorEstimate > (1 - settings.reserve) * settings.tpm)
    throw new Error('a batch line never fits under the reserve: raise --tpm');
  const capacityTokensPerSecond = (DEPLOYMENT_IDS.length * settings.tpm * 1000) / settings.windowMs;
  const capacityRps = (DEPLOYMENT_IDS.length * perDeployment * 1000) / settings.windowMs;
  const idlePerSecond = (1 - settings.reserve - settings.load) * capacityTokensPerSecond;
  return {
    interactive,
    line,
    capacityTokensPerSecond,
    capacityRps,
    interactiveRps: capacityRps * settings.load,
    plannedIdealSeconds: (settings.lines * line.usage) / idlePerSecond,
  };
}

/** Each phase has a pool of its own (its own Redis key space and BullMQ queue): `alone-1`, `batch-1`, … */
export function poolName(kind: PhaseKind, round: number): string {
  return `${kind}-${round}`;
}

export function requestPath(pool: string): string {
  return `/openai/deployments/${encodeURIComponent(pool)}/chat/completions?api-version=${API_VERSION}`;
}

/** The phases in order: alone first in odd rounds, the batch first in even ones (so drift favours neither). */
export function phaseOrder(settings: Settings, batchPossible: boolean): { kind: PhaseKind; round: number }[] {
  const order: { kind: PhaseKind; round: number }[] = [];
  for (let round = 1; round <= settings.rounds; round++) {
    const kinds: PhaseKind[] = !batchPossible ? ['alone'] : round % 2 === 1 ? ['alone', 'batch'] : ['batch', 'alone'];
    for (const kind of kinds) order.push({ kind, round });
  }
  return order;
}

/** Bounded: every phase at its longest plus slack, start-up and stop. */
export function hardCapMs(settings: Settings): number {
  const warmupMs = settings.warmupWindows * settings.windowMs;
  const aloneMs = warmupMs + settings.aloneWindows * settings.windowMs + PHASE_SLACK_MS;
  const batchMs = settings.aloneOnly ? 0 : warmupMs + settings.batchCapMs + 2 * FILE_TIMEOUT_MS + PHASE_SLACK_MS;
  return settings.rounds * (aloneMs + batchMs) + 90_000;
}
