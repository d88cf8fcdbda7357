/**
 * Scenario files (loadtest/scenarios/*.json): plain data read by the k6 scripts (loadtest/k6/lib.js)
 * and by the local driver. The request bodies, stage scaling and error definition here mirror
 * lib.js line for line, so what k6 would send is what the driver sends.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { faultSchema } from '../../shared/simulator/faults.ts';

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

/** When a chaos event starts and ends, from the load's start: `end`, or `duration` after `start`. */
const eventTimes = {
  /** Unique label of the event in the report. */
  name: z.string().min(1),
  start: duration,
  end: duration.optional(),
  duration: duration.optional(),
};

/**
 * The chaos schedule (local runs only; k6 ignores it). Each event acts at its start and undoes at its
 * end; its report window runs from its start to `settle` after its end (the aftermath belongs to it);
 * the rest of the load is the quiet baseline. See loadtest/chaos/.
 */
const chaosSchema = z.strictObject({
  /** After an event ends, this long still counts as its aftermath; the next event may start only after it. */
  settle: duration,
  events: z
    .array(
      z.discriminatedUnion('kind', [
        /** SIGKILL the redis-server; at the end a new, empty one on the same port. */
        z.strictObject({ kind: z.literal('redis-kill'), ...eventTimes }),
        /** SIGSTOP the redis-server (connections stay open, nothing answers); SIGCONT at the end. */
        z.strictObject({ kind: z.literal('redis-freeze'), ...eventTimes }),
        /** SIGKILL one gateway (1-based, gateway-N); nginx routes around it; `restart`: on the same port at the end. */
        z.strictObject({ kind: z.literal('gateway-kill'), ...eventTimes, gateway: z.number().int().min(1), restart: z.boolean() }),
        /** A simulator fault on one deployment (`pool` may be left out when there is one pool), cleared at the end. */
        z.strictObject({
          kind: z.literal('fault'),
          ...eventTimes,
          pool: z.string().optional(),
          deployment: z.string().min(1),
          fault: faultSchema,
        }),
      ]),
    )
    .min(1),
});

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
    /** Settings for the gateways' `gateway:` config section (leaseMs, upstreamTimeoutMs…), checked by the gateway's own schema. */
    gateway: z.record(z.string(), z.unknown()).optional(),
    pools: z.record(
      z.string(),
      z.strictObject({
        strategy: z.string().optional(),
        deployments: z.array(localDeployment).min(1),
      }),
    ),
  }),
  chaos: chaosSchema.optional(),
});

export type Scenario = z.infer<typeof scenarioSchema>;
export type RequestSpec = Scenario['requests'][number];
export type ChaosSpec = NonNullable<Scenario['chaos']>;
export type ChaosEventSpec = ChaosSpec['events'][number];
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
  if (parsed.data.chaos) checkChaos(name, parsed.data);
  return parsed.data;
}

/** The chaos schedule's cross-checks: times, order and gaps, within the stages; deployments that exist. */
function checkChaos(name: string, scenario: Scenario): void {
  const chaos = scenario.chaos!;
  const fail = (message: string) => {
    throw new Error(`scenario ${name}: chaos: ${message}`);
  };
  const loadMs = scenario.load.stages.reduce((acc, stage) => acc + parseDuration(stage.duration), 0);
  const settleMs = parseDuration(chaos.settle);
  const names = new Set<string>();
  let free = 0;
  for (const event of chaos.events) {
    if (names.has(event.name)) fail(`two events are named '${event.name}'`);
    names.add(event.name);
    const { startMs, endMs } = eventSpan(event);
    if ((event.end === undefined) === (event.duration === undefined)) fail(`event '${event.name}' needs either end or duration`);
    if (endMs <= startMs) fail(`event '${event.name}' ends before it starts`);
    if (startMs < free) fail(`event '${event.name}' starts before the previous one's settle time is over (at ${free} ms)`);
    free = endMs + settleMs;
    if (free > loadMs) fail(`event '${event.name}' and its settle time end after the load (${loadMs} ms)`);
    if (event.kind === 'fault') {
      const pools = Object.keys(scenario.local.pools);
      const pool = event.pool ?? (pools.length === 1 ? pools[0]! : fail(`event '${event.name}' must name its pool (several pools)`));
      const ids = scenario.local.pools[pool]?.deployments.map((d) => d.id);
      if (!ids) fail(`event '${event.name}' names pool '${pool}', which local.pools does not define`);
      if (!ids!.includes(event.deployment)) fail(`event '${event.name}': pool '${pool}' has no deployment '${event.deployment}'`);
    }
  }
}

/** An event's start and end, ms from the load's start, as written (before --duration scales them). */
export function eventSpan(event: ChaosEventSpec): { startMs: number; endMs: number } {
  const startMs = parseDuration(event.start);
  const endMs = event.end !== undefined ? parseDuration(event.end) : startMs + parseDuration(event.duration ?? '0s');
  return { startMs, endMs };
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
