/**
 * Phase 4 of the bench, "APIs": what a target adds to three kinds of request, side by side in the
 * same rounds, at a fixed rate (open model, `api-rate` rps for `api-duration` per API):
 *   chat        the chat completion of phases 1–3 (/openai/deployments/{pool}/chat/completions);
 *   create      a Responses create, POST /openai/v1/responses with `model` = the pool (for direct
 *               and the plain proxies the simulator's deployment), the same 400-character prompt as
 *               `input`, max_output_tokens 16: a gateway rewrites the ids of the (larger) body out;
 *   follow-up   the same with `previous_response_id` naming one of API_POOL_SIZE responses created
 *               through the same target just before the run (so the ids are the target's own
 *               format): a gateway reads the id's resource tag, pins the request to that resource,
 *               restores the upstream id in, rewrites the ids out.
 * The follow-ups pick their id uniformly from the pool (the load generator's seeded pick over equal
 * weights, the same sequence every run): a response can be continued many times, and no gateway
 * keeps anything per id, so which one a follow-up names costs the same.
 *
 * Each round runs the APIs in turn (the order rotated every round), each against the phase's
 * targets in turn (rotated too), after the other phases of that round. A target that does not serve
 * the Responses API (an older checkout of --compare-with) is probed once and left out, marked n/a.
 *
 * Bounded: a run sends at most api-rate × api-duration requests (MAX_API_RUN_REQUESTS, within the
 * simulator's 10 000 stored responses), a pool is API_POOL_SIZE creates within API_POOL_BUDGET_MS.
 */
import { emptyCpu, type Aggregate, type CpuSplit } from './measure.ts';
import { baseSpec, measure } from './measure.ts';
import type { PreparedRequest, RunSpec } from '../lib/protocol.ts';
import { promptText } from '../lib/scenario.ts';
import { fmt } from '../lib/format.ts';
import { API_POOL_BUDGET_MS, API_POOL_SIZE, type BenchOptions, type TargetKey } from './options.ts';
import { benchRequest, type BenchStack, type Target } from './targets.ts';

export const API_NAMES = ['chat', 'create', 'follow-up'] as const;
export type ApiName = (typeof API_NAMES)[number];

export const API_LABELS: Record<ApiName, string> = {
  chat: 'chat completion',
  create: 'Responses create',
  'follow-up': 'Responses follow-up',
};

export const RESPONSES_PATH = '/openai/v1/responses';
const PROMPT = promptText(400);
const MAX_OUTPUT_TOKENS = 16;
/** Creates of a pool in flight at once. */
const POOL_CONCURRENCY = 8;
/** A probe request may take this long (as a smoke request). */
const PROBE_TIMEOUT_MS = 10_000;

/** One run of an API against a target: its result (with samples), its CPU, and the round it belongs to. */
export interface ApiAggregate extends Aggregate {
  rounds: number[];
}

export interface ApiPhase {
  /** The phase's targets that serve the Responses API, in run order. */
  keys: TargetKey[];
  /** The phase's targets that do not, with what the probe got. */
  unavailable: Map<TargetKey, string>;
  runs: Map<TargetKey, Record<ApiName, ApiAggregate>>;
  /** Follow-up runs left out because no response of their pool could be created. */
  skippedRuns: number;
}

const log = (line: string) => process.stdout.write(`${line}\n`);

/** The body's `model`: the last segment of the target's path prefix (the gateway's pool, or the simulator's deployment). */
function modelOf(target: Target): string {
  return target.deploymentPath.slice(target.deploymentPath.lastIndexOf('/') + 1);
}

function responsesBody(target: Target, previousId?: string): string {
  return JSON.stringify({
    model: modelOf(target),
    input: PROMPT,
    max_output_tokens: MAX_OUTPUT_TOKENS,
    ...(previousId === undefined ? {} : { previous_response_id: previousId }),
  });
}

/** The requests of one API's run: one chat, one create, or one follow-up per id of the pool. */
export function apiRequests(target: Target, api: ApiName, pool: string[]): PreparedRequest[] {
  if (api === 'chat') return [benchRequest(target, false)];
  if (api === 'create') return [{ name: 'responses-create', path: RESPONSES_PATH, body: responsesBody(target), stream: false, weight: 1 }];
  return pool.map((id) => ({
    name: 'responses-follow-up',
    path: RESPONSES_PATH,
    body: responsesBody(target, id),
    stream: false,
    weight: 1,
  }));
}

export function apiSpec(options: BenchOptions, target: Target, api: ApiName, pool: string[]): RunSpec {
  const { apiRate, apiMs } = options;
  return {
    ...baseSpec(target, false),
    requests: apiRequests(target, api, pool),
    maxRequests: Math.ceil((apiRate * apiMs) / 1000) + 1,
    mode: { kind: 'open', startRate: apiRate, stages: [{ durationMs: apiMs, target: apiRate }], maxInFlight: 512 },
  };
}

/** One Responses call through the target: the response's id, or what went wrong. */
async function postResponse(target: Target, body: string, signal: AbortSignal): Promise<{ id: string } | { error: string }> {
  try {
    const response = await fetch(`${target.url}${RESPONSES_PATH}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': target.apiKey },
      body,
      signal,
    });
    const text = await response.text();
    if (response.status !== 200) return { error: `${response.status}: ${text.slice(0, 200)}` };
    const id = (JSON.parse(text) as { id?: unknown }).id;
    return typeof id === 'string' && id !== '' ? { id } : { error: `200 without an id: ${text.slice(0, 200)}` };
  } catch (error) {
    return { error: error instanceof Error ? error.message : String(error) };
  }
}

/** Up to `count` fresh responses created through the target, POOL_CONCURRENCY at a time, within API_POOL_BUDGET_MS. */
export async function createPool(target: Target, count = API_POOL_SIZE): Promise<{ ids: string[]; errors: string[] }> {
  const signal = AbortSignal.timeout(API_POOL_BUDGET_MS);
  const ids: string[] = [];
  const errors: string[] = [];
  let started = 0;
  const worker = async () => {
    while (started < count && !signal.aborted) {
      started += 1;
      const created = await postResponse(target, responsesBody(target), signal);
      if ('id' in created) ids.push(created.id);
      else errors.push(created.error);
    }
  };
  await Promise.all(Array.from({ length: Math.min(POOL_CONCURRENCY, count) }, worker));
  return { ids, errors };
}

/**
 * A create and a follow-up of it through each of the phase's targets. A target of this checkout
 * must serve both (the bench stops otherwise, as its smoke test does); one of --compare-with's
 * that does not is marked unavailable.
 */
export async function probeApis(stack: BenchStack, options: BenchOptions): Promise<ApiPhase> {
  const phase: ApiPhase = { keys: [], unavailable: new Map(), runs: new Map(), skippedRuns: 0 };
  for (const key of options.apiKeys) {
    const target = stack.targets.find((t) => t.key === key)!;
    const created = await postResponse(target, responsesBody(target), AbortSignal.timeout(PROBE_TIMEOUT_MS));
    const followed =
      'id' in created ? await postResponse(target, responsesBody(target, created.id), AbortSignal.timeout(PROBE_TIMEOUT_MS)) : created;
    const failure = 'error' in created ? `create: ${created.error}` : 'error' in followed ? `follow-up: ${followed.error}` : undefined;
    if (failure !== undefined) {
      if (!key.endsWith('@before')) throw new Error(`${key}: the Responses probe failed (${failure})`);
      phase.unavailable.set(key, failure);
      log(`APIs phase: ${key} does not serve ${RESPONSES_PATH} (${failure.slice(0, 120)}): n/a`);
      continue;
    }
    phase.keys.push(key);
    const aggregate = (): ApiAggregate => ({ runs: [], cpu: emptyCpu(), rounds: [] });
    phase.runs.set(key, { chat: aggregate(), create: aggregate(), 'follow-up': aggregate() });
  }
  return phase;
}

/** JIT of the Responses paths: a short closed loop of creates and of follow-ups per target, not recorded. */
export async function warmUpApis(stack: BenchStack, phase: ApiPhase): Promise<void> {
  for (const key of phase.keys) {
    const target = stack.targets.find((t) => t.key === key)!;
    const { ids } = await createPool(target, 16);
    for (const api of ['create', 'follow-up'] as const) {
      if (api === 'follow-up' && ids.length === 0) continue;
      await stack.generator.run({
        ...baseSpec(target, false),
        requests: apiRequests(target, api, ids),
        maxRequests: 5000,
        mode: { kind: 'closed', concurrency: 4, durationMs: 300 },
        returnSamples: false,
      });
    }
  }
}

const rotate = <T>(items: readonly T[], by: number): T[] => items.map((_, index) => items[(index + by) % items.length]!);

/** One round of the phase: each API in turn, each against every target in turn, both orders rotated by the round. */
export async function runApiRound(stack: BenchStack, options: BenchOptions, phase: ApiPhase, round: number): Promise<void> {
  if (phase.keys.length === 0) return;
  const width = Math.max(15, ...phase.keys.map((k) => k.length + 1));
  for (const api of rotate(API_NAMES, round)) {
    for (const key of rotate(phase.keys, round)) {
      const target = stack.targets.find((t) => t.key === key)!;
      let pool: string[] = [];
      if (api === 'follow-up') {
        const created = await createPool(target);
        pool = created.ids;
        if (created.errors.length > 0)
          log(`  round ${round + 1} ${key}: ${created.errors.length} of the pool's creates failed (${created.errors[0]!.slice(0, 120)})`);
        if (pool.length === 0) {
          phase.skippedRuns += 1;
          continue;
        }
      }
      const run = await measure(stack, target, apiSpec(options, target, api, pool));
      const aggregate = phase.runs.get(key)![api];
      aggregate.runs.push(run.result);
      aggregate.rounds.push(round);
      for (const field of Object.keys(aggregate.cpu) as (keyof CpuSplit)[]) aggregate.cpu[field] += run.cpu[field];
      const latency = run.result.latencyByStatus['200'];
      log(
        `  round ${round + 1} ${api.padEnd(9)} ${key.padEnd(width)} p50 ${fmt(latency?.p50, 2)} ms  p90 ${fmt(latency?.p90, 2)} ms  errors ${run.result.errors}`,
      );
    }
  }
}
