/**
 * Checks a batch input file line by line as it is uploaded, so that no batch fails an hour in for a
 * typo: each line is a request `{custom_id, method: "POST", url, body}`, custom_ids are unique, every
 * line runs the same endpoint on the same pool (its `body.model`, a pool that runs batch lines), and
 * each body passes what an interactive request is refused for (gateway/http/prepare-request.ts: a JSON
 * object within gateway.maxBodyBytes, a known pool, an estimate some deployment's token budget can
 * hold) plus what a batch line cannot be (a stream). The first problems are kept, each with its line.
 */
import { errors } from '../../errors.ts';
import type { Pool } from '../../pools.ts';
import { estimateTokens, largestTokenBudget } from '../../routing/estimate.ts';
import type { BatchEndpoint } from '../contract.ts';
import { batchEndpointOf, ENDPOINT_NAMES, operationOf } from './endpoints.ts';
import type { JsonlLine } from './jsonl-lines.ts';

export interface LineProblem {
  /** 1-based line of the file; null for a problem of the whole file. */
  line: number | null;
  code: string;
  message: string;
}

export interface FileSummary {
  pool: string;
  endpoint: BatchEndpoint;
  /** Request lines (blank lines are not requests). */
  requests: number;
}

export type CheckResult = { ok: true; summary: FileSummary } | { ok: false; problems: LineProblem[]; problemCount: number };

export interface LineCheckOptions {
  pools: ReadonlyMap<string, Pool>;
  /** A line's body may be this large (gateway.maxBodyBytes), as an interactive request's. */
  maxBodyBytes: number;
  /** Most request lines in a file (background.maxFileLines). */
  maxLines: number;
  /** Problems kept for the answer (all are counted). */
  maxProblems?: number;
}

/** OpenAI names no limit; a custom_id is echoed on every result line, so it is kept short. */
export const MAX_CUSTOM_ID_CHARS = 512;
/** The envelope around a body (custom_id, method, url) on top of the body's own limit. */
const ENVELOPE_BYTES = 4096;
const DEFAULT_MAX_PROBLEMS = 20;

export class BatchFileCheck {
  readonly #options: LineCheckOptions;
  readonly #maxProblems: number;
  readonly #customIds = new Map<string, number>();
  readonly #problems: LineProblem[] = [];
  #problemCount = 0;
  #requests = 0;
  /** The first request's endpoint and pool, and its line: every other line must match them. */
  #first: { line: number; url: string; endpoint: BatchEndpoint; model: string; pool: Pool } | undefined;

  constructor(options: LineCheckOptions) {
    this.#options = options;
    this.#maxProblems = options.maxProblems ?? DEFAULT_MAX_PROBLEMS;
  }

  /** The longest line worth reading whole: anything longer is refused by its length. */
  get maxLineBytes(): number {
    return this.#options.maxBodyBytes + ENVELOPE_BYTES;
  }

  get failed(): boolean {
    return this.#problemCount > 0;
  }

  /** `request` for a request line (it gets a place in the line index), `blank` for an empty one, `problem` otherwise. */
  check(line: JsonlLine): 'request' | 'blank' | 'problem' {
    if (line.bytes === undefined) {
      this.#requests += 1;
      return this.#problem(
        line.number,
        'line_too_large',
        `the line is ${line.length} bytes, more than a request may be (${this.maxLineBytes})`,
      );
    }
    const text = line.bytes.toString('utf8');
    // A blank line is not a request (a file's last newline, or lines left between requests).
    if (text.trim() === '') return 'blank';
    this.#requests += 1;
    if (this.#requests === this.#options.maxLines + 1) {
      this.#problem(
        line.number,
        'too_many_requests',
        `the file has more than ${this.#options.maxLines} requests, the most one batch may have`,
      );
    }
    const problem = this.#checkRequest(line.number, text);
    return problem ? this.#problem(line.number, problem[0], problem[1]) : 'request';
  }

  /** The verdict once the whole file has been read. */
  result(): CheckResult {
    if (this.#requests === 0 && this.#problemCount === 0) this.#problem(null, 'empty_file', 'the file has no request lines');
    if (this.#problemCount > 0 || !this.#first) return { ok: false, problems: this.#problems, problemCount: this.#problemCount };
    return { ok: true, summary: { pool: this.#first.pool.name, endpoint: this.#first.endpoint, requests: this.#requests } };
  }

  #problem(line: number | null, code: string, message: string): 'problem' {
    this.#problemCount += 1;
    if (this.#problems.length < this.#maxProblems) this.#problems.push({ line, code, message });
    return 'problem';
  }

  /** The line's first problem as [code, message]; undefined when it is a valid request. */
  #checkRequest(number: number, text: string): [string, string] | undefined {
    let request: unknown;
    try {
      request = JSON.parse(text);
    } catch {
      return ['invalid_json_line', 'the line is not valid JSON'];
    }
    if (!isObject(request)) return ['invalid_request', 'the line must be a JSON object with custom_id, method, url and body'];
    const { custom_id: customId, method, url, body } = request;
    if (typeof customId !== 'string' || customId === '') return ['invalid_custom_id', 'custom_id must be a non-empty string'];
    if (customId.length > MAX_CUSTOM_ID_CHARS) return ['invalid_custom_id', `custom_id is longer than ${MAX_CUSTOM_ID_CHARS} characters`];
    const seen = this.#customIds.get(customId);
    if (seen !== undefined) return ['duplicate_custom_id', `custom_id ${JSON.stringify(customId)} is also the custom_id of line ${seen}`];
    this.#customIds.set(customId, number);
    if (method !== 'POST') return ['invalid_method', 'method must be "POST"'];
    const endpoint = batchEndpointOf(url);
    if (!endpoint) return ['invalid_url', `url must be one of ${ENDPOINT_NAMES.join(', ')}`];
    if (!isObject(body)) return ['invalid_body', 'body must be a JSON object (the request)'];
    const { model } = body;
    if (typeof model !== 'string' || model === '') return ['missing_model', 'body.model must name a pool of this gateway'];
    const pool = this.#options.pools.get(model);
    if (!pool) return ['model_not_found', errors.unknownPool(model).message];
    if (pool.config.background?.enabled === false)
      return ['model_not_batchable', `pool ${model} does not run batch lines (background.enabled is false)`];
    const first = (this.#first ??= { line: number, url: url as string, endpoint, model, pool });
    if (endpoint !== first.endpoint)
      return ['mismatched_url', `url ${String(url)} differs from line ${first.line}'s ${first.url}: a batch runs one endpoint`];
    if (model !== first.model)
      return ['mismatched_model', `model ${model} differs from line ${first.line}'s ${first.model}: a batch runs on one pool`];
    if (body.stream === true) return ['stream_not_supported', 'a batch line cannot stream: remove "stream": true'];
    const bodyBytes = Buffer.byteLength(JSON.stringify(body));
    if (bodyBytes > this.#options.maxBodyBytes) return ['body_too_large', errors.tooLarge(this.#options.maxBodyBytes).message];
    const estimate = estimateTokens(pool, operationOf(endpoint), body);
    const largest = largestTokenBudget(pool);
    if (largest !== undefined && estimate > largest)
      return ['tokens_exceed_budget', errors.overBudget(pool.name, estimate, largest).message];
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
