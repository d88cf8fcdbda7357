/**
 * Scenario files (loadtest/scenarios/*.json): plain data read by the k6 scripts (loadtest/k6/lib.js)
 * and by the local driver. The request bodies, stage scaling and error definition here mirror
 * lib.js line for line, so what k6 would send is what the driver sends.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

const SCENARIO_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'scenarios');

const DURATION = /^(\d+(?:\.\d+)?(?:ms|s|m|h))+$/;
const duration = z.string().regex(DURATION, 'a k6 duration such as 500ms, 10s, 2m or 1m30s');

const requestSpec = z.strictObject({
  name: z.string().min(1),
  operation: z.enum(['chat/completions', 'completions', 'embeddings']),
  pool: z.string().min(1),
  weight: z.number().positive(),
  stream: z.boolean(),
  promptChars: z.number().int().min(1),
  maxTokens: z.number().int().min(1).optional(),
  /** Embeddings: how many copies of the text go in `input` (absent or 1: a single string). */
  inputs: z.number().int().min(1).optional(),
});

const latency = z.strictObject({ ttftMs: z.number().min(0), perTokenMs: z.number().min(0) });

const localDeployment = z.strictObject({
  id: z.string().min(1),
  tpm: z.number().int().positive().optional(),
  rpm: z.number().int().positive().optional(),
  priority: z.number().int().positive().optional(),
  weight: z.number().int().positive().optional(),
  region: z.string().optional(),
  model: z.string().optional(),
  latency: latency.optional(),
  completionTokens: z.number().int().min(0).optional(),
});

const scenarioSchema = z.strictObject({
  name: z.string().min(1),
  description: z.string(),
  apiVersion: z.string(),
  requests: z.array(requestSpec).min(1),
  load: z.strictObject({
    startRate: z.number().min(0),
    stages: z.array(z.strictObject({ duration, target: z.number().min(0) })).min(1),
    preAllocatedVUs: z.number().int().min(1),
    /** Most requests in flight at once; arrivals beyond it are dropped and counted (k6's dropped_iterations). */
    maxVUs: z.number().int().min(1),
    requestTimeout: duration,
  }),
  thresholds: z.strictObject({
    /** Statuses that are not errors (default [200]). Transport failures are always errors. */
    okStatuses: z.array(z.number().int()).optional(),
    maxErrorRate: z.number().min(0).max(1),
    /** p95 of the latency of 200 responses. */
    p95LatencyMs: z.number().positive().optional(),
    /** p95 time to first token of streaming 200 responses. */
    p95TtftMs: z.number().positive().optional(),
    /** p95 latency of 429 responses (shedding must be fast). */
    p95ThrottledLatencyMs: z.number().positive().optional(),
    /** Every 429 carries retry-after. */
    retryAfterOn429: z.boolean().optional(),
  }),
  /** The local environment (ignored by k6): simulated deployments per pool, gateway count, limits. */
  local: z.strictObject({
    gateways: z.number().int().min(1).max(16),
    maxRequests: z.number().int().min(1),
    windowMs: z.number().int().positive(),
    latency,
    completionTokens: z.number().int().min(0),
    pools: z.record(
      z.string(),
      z.strictObject({
        strategy: z.string().optional(),
        deployments: z.array(localDeployment).min(1),
      }),
    ),
  }),
});

export type Scenario = z.infer<typeof scenarioSchema>;
export type RequestSpec = Scenario['requests'][number];
export type Stage = { durationMs: number; target: number };

export function listScenarios(): string[] {
  return readdirSync(SCENARIO_DIR)
    .filter((file) => file.endsWith('.json'))
    .map((file) => basename(file, '.json'))
    .sort();
}

export function loadScenario(name: string): Scenario {
  const file = name.endsWith('.json') ? name : join(SCENARIO_DIR, `${name}.json`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new Error(`cannot read scenario '${name}' (${(error as Error).message}); known: ${listScenarios().join(', ')}`);
  }
  const parsed = scenarioSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`invalid scenario ${file}:\n${z.prettifyError(parsed.error)}`);
  for (const request of parsed.data.requests) {
    if (!(request.pool in parsed.data.local.pools))
      throw new Error(`scenario ${name}: request '${request.name}' names pool '${request.pool}', which local.pools does not define`);
  }
  return parsed.data;
}

const WORDS = [
  'the',
  'gateway',
  'spreads',
  'traffic',
  'over',
  'many',
  'deployments',
  'so',
  'that',
  'clients',
  'see',
  'one',
  'endpoint',
  'with',
  'the',
  'sum',
  'of',
  'their',
  'capacity',
];

/** Deterministic prompt text of exactly `chars` characters (as lib.js). */
export function promptText(chars: number): string {
  let text = '';
  for (let index = 0; text.length < chars; index++) text += (text === '' ? '' : ' ') + WORDS[index % WORDS.length];
  return text.slice(0, chars);
}

/** The request body (as lib.js). */
export function requestBody(spec: RequestSpec): string {
  if (spec.operation === 'embeddings') {
    const text = promptText(spec.promptChars);
    const input = spec.inputs && spec.inputs > 1 ? Array.from({ length: spec.inputs }, () => text) : text;
    return JSON.stringify({ input, encoding_format: 'base64' });
  }
  const body: Record<string, unknown> = { messages: [{ role: 'user', content: promptText(spec.promptChars) }] };
  if (spec.maxTokens !== undefined) body.max_tokens = spec.maxTokens;
  if (spec.stream) {
    body.stream = true;
    body.stream_options = { include_usage: true };
  }
  return JSON.stringify(body);
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** k6 durations: 500ms, 10s, 2m, 1h, 1m30s → milliseconds. */
export function parseDuration(text: string): number {
  if (!DURATION.test(text)) throw new Error(`not a duration: '${text}' (use e.g. 500ms, 10s, 2m, 1m30s)`);
  let total = 0;
  for (const match of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(match[1]) * (UNITS[match[2] ?? 's'] ?? 1000);
  return total;
}

/** Stages stretched to `totalMs` (keeping proportions) and targets times `rateFactor` (as lib.js). */
export function scaleStages(stages: Scenario['load']['stages'], totalMs: number | undefined, rateFactor: number): Stage[] {
  const sum = stages.reduce((acc, stage) => acc + parseDuration(stage.duration), 0);
  const factor = totalMs === undefined ? 1 : totalMs / sum;
  return stages.map((stage) => ({
    durationMs: Math.max(1, Math.round(parseDuration(stage.duration) * factor)),
    target: Math.round(stage.target * rateFactor * 1000) / 1000,
  }));
}

/** Name used for a simulated deployment of a pool (unique across pools). */
export function simDeploymentName(pool: string, id: string): string {
  return `${pool}--${id}`;
}
