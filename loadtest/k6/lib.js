// Shared by the k6 scripts of this folder. Plain ES module for k6 (no Node APIs), typechecked with
// @types/k6 through ./tsconfig.json (`npm run lint:k6`).
//
// The scenarios are plain data in ../scenarios/*.json: the local driver (loadtest/driver.ts) reads
// the same files and builds the same requests (see loadtest/lib/scenario.ts, which mirrors
// promptText/requestBody/scaleStages/thresholdsFor below), so a k6 run against a real gateway and a
// local run on one machine drive the same mix, stages and thresholds.
//
// Environment: BASE_URL (default http://localhost:8080), API_KEY (client key, sent as `api-key`),
// POOL (overrides the pool of every chat request), EMBEDDINGS_POOL (same for embeddings),
// DURATION (e.g. 2m: the stages are stretched or shrunk to this total, keeping their proportions),
// RATE_FACTOR (e.g. 0.5: every arrival rate is multiplied by it).
import http from 'k6/http';
import { check } from 'k6';
import { Rate, Trend } from 'k6/metrics';

/**
 * @typedef {{ name: string, operation: string, pool: string, weight: number, stream: boolean,
 *             promptChars: number, maxTokens?: number, inputs?: number }} RequestSpec
 * @typedef {{ duration: string, target: number }} Stage
 * @typedef {{ okStatuses?: number[], maxErrorRate: number, p95LatencyMs?: number, p95TtftMs?: number,
 *             p95ThrottledLatencyMs?: number, retryAfterOn429?: boolean }} Thresholds
 * @typedef {{ name: string, apiVersion: string, requests: RequestSpec[],
 *             load: { startRate: number, stages: Stage[], preAllocatedVUs: number, maxVUs: number, requestTimeout: string },
 *             thresholds: Thresholds }} Scenario
 */

/** Time to first token of streaming requests. k6 reads whole responses (no true streaming), so this
 *  is `timings.waiting`, the time to the first response byte: the gateway sends headers when the
 *  deployment sends them, and Azure (and the simulator) send them with the first content chunk. */
export const ttft = new Trend('ttft', true);
/** 1 for every 429 without a retry-after header, 0 for every 429 with one. */
export const retryAfterMissing = new Rate('retry_after_missing');
/** Share of all responses that were 429 (informative; overload expects many). */
export const throttled = new Rate('throttled');

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

/** Deterministic prompt text of exactly `chars` characters. @param {number} chars */
export function promptText(chars) {
  let text = '';
  for (let index = 0; text.length < chars; index++) text += (text === '' ? '' : ' ') + WORDS[index % WORDS.length];
  return text.slice(0, chars);
}

/** @param {RequestSpec} spec */
export function requestBody(spec) {
  if (spec.operation === 'embeddings') {
    const text = promptText(spec.promptChars);
    const input = spec.inputs && spec.inputs > 1 ? Array.from({ length: spec.inputs }, () => text) : text;
    return JSON.stringify({ input, encoding_format: 'base64' });
  }
  /** @type {Record<string, unknown>} */
  const body = { messages: [{ role: 'user', content: promptText(spec.promptChars) }] };
  if (spec.maxTokens !== undefined) body.max_tokens = spec.maxTokens;
  if (spec.stream) {
    body.stream = true;
    body.stream_options = { include_usage: true };
  }
  return JSON.stringify(body);
}

/** k6 durations: 500ms, 10s, 2m, 1h, 1m30s. @param {string} text @returns {number} milliseconds */
export function parseDuration(text) {
  const pattern = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  const units = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  let matched = '';
  for (let match = pattern.exec(text); match !== null; match = pattern.exec(text)) {
    total += Number(match[1]) * units[/** @type {'ms'|'s'|'m'|'h'} */ (match[2])];
    matched += match[0];
  }
  if (matched === '' || matched !== text) throw new Error(`not a duration: '${text}'`);
  return total;
}

/** Stretches the stages to `totalMs`, keeping their proportions; scales every target by `rateFactor`.
 *  @param {Stage[]} stages @param {number | undefined} totalMs @param {number} rateFactor @returns {Stage[]} */
export function scaleStages(stages, totalMs, rateFactor) {
  const sum = stages.reduce((acc, stage) => acc + parseDuration(stage.duration), 0);
  const factor = totalMs === undefined ? 1 : totalMs / sum;
  return stages.map((stage) => ({
    duration: `${Math.max(1, Math.round(parseDuration(stage.duration) * factor))}ms`,
    target: Math.round(stage.target * rateFactor * 1000) / 1000,
  }));
}

/** The scenario's thresholds as k6 thresholds. Errors are statuses outside okStatuses, and transport
 *  failures (http_req_failed, through the response callback set in `setup`).
 *  @param {Thresholds} t @returns {Record<string, string[]>} */
export function thresholdsFor(t) {
  /** @type {Record<string, string[]>} */
  const out = { http_req_failed: [`rate<${t.maxErrorRate}`] };
  if (t.p95LatencyMs !== undefined) out['http_req_duration{status:200}'] = [`p(95)<${t.p95LatencyMs}`];
  if (t.p95ThrottledLatencyMs !== undefined) out['http_req_duration{status:429}'] = [`p(95)<${t.p95ThrottledLatencyMs}`];
  if (t.p95TtftMs !== undefined) out.ttft = [`p(95)<${t.p95TtftMs}`];
  if (t.retryAfterOn429) out.retry_after_missing = ['rate==0'];
  return out;
}

/** k6 options for a scenario: an open model (ramping-arrival-rate) over its stages.
 *  @param {Scenario} scenario */
export function optionsFor(scenario) {
  const load = scenario.load;
  const rateFactor = __ENV.RATE_FACTOR ? Number(__ENV.RATE_FACTOR) : 1;
  const totalMs = __ENV.DURATION ? parseDuration(__ENV.DURATION) : undefined;
  http.setResponseCallback(http.expectedStatuses(...(scenario.thresholds.okStatuses ?? [200])));
  return {
    scenarios: {
      [scenario.name]: {
        executor: 'ramping-arrival-rate',
        startRate: load.startRate * rateFactor,
        timeUnit: '1s',
        preAllocatedVUs: load.preAllocatedVUs,
        maxVUs: load.maxVUs,
        stages: scaleStages(load.stages, totalMs, rateFactor),
        gracefulStop: load.requestTimeout,
      },
    },
    thresholds: thresholdsFor(scenario.thresholds),
    summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  };
}

/** Everything an iteration needs, built once per VU (init context).
 *  @param {Scenario} scenario */
export function prepare(scenario) {
  const baseUrl = (__ENV.BASE_URL || 'http://localhost:8080').replace(/\/+$/, '');
  const headers = { 'content-type': 'application/json', 'api-key': __ENV.API_KEY || '' };
  const totalWeight = scenario.requests.reduce((acc, spec) => acc + spec.weight, 0);
  const prepared = scenario.requests.map((spec) => {
    const pool = spec.operation === 'embeddings' ? __ENV.EMBEDDINGS_POOL || spec.pool : __ENV.POOL || spec.pool;
    return {
      spec,
      url: `${baseUrl}/openai/deployments/${encodeURIComponent(pool)}/${spec.operation}?api-version=${scenario.apiVersion}`,
      body: requestBody(spec),
      params: {
        headers,
        tags: { name: spec.name },
        timeout: scenario.load.requestTimeout,
        // Streams are read whole (k6 cannot read a body as it arrives) to check they finished.
        responseType: /** @type {import('k6/http').ResponseType} */ (spec.stream ? 'text' : 'none'),
      },
    };
  });
  return { prepared, totalWeight };
}

/** One request of the mix, picked at random by weight, with its checks and metrics.
 *  @param {ReturnType<typeof prepare>} state */
export function iteration(state) {
  let pick = Math.random() * state.totalWeight;
  let chosen = state.prepared[state.prepared.length - 1];
  for (const entry of state.prepared) {
    pick -= entry.spec.weight;
    if (pick < 0) {
      chosen = entry;
      break;
    }
  }
  if (chosen === undefined) return;
  const res = http.post(chosen.url, chosen.body, chosen.params);
  throttled.add(res.status === 429, { name: chosen.spec.name });
  if (res.status === 429) {
    retryAfterMissing.add(!(res.headers['Retry-After'] || res.headers['retry-after']), { name: chosen.spec.name });
  }
  if (chosen.spec.stream && res.status === 200) {
    ttft.add(res.timings.waiting, { name: chosen.spec.name });
    check(res, { 'stream ended with [DONE]': (r) => typeof r.body === 'string' && r.body.includes('data: [DONE]') });
  }
  check(res, { 'status 200': (r) => r.status === 200 });
}
