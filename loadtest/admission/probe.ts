/** The admission benchmark's honesty probe: is the retry time told on a 429 one that works when honoured? */
import { summarize, type Summary } from '../lib/stats.ts';
import { sendingStopped, sleepUntil, within, type Answer, type Client } from './client.ts';
import {
  DRAIN_MS,
  PROBE_FILL_BATCHES,
  PROBE_SERIES_CAP_MS,
  REQUEST_TIMEOUT_MS,
  requestPath,
  type Policy,
  type Settings,
} from './settings.ts';
import type { Stack } from './stack.ts';

interface ProbeCycle {
  /** 'probed': the probe got a 429 and its retry time was honoured; 'room': it got 200 (room had freed meanwhile). */
  kind: 'probed' | 'room' | 'error';
  /** Requests sent to fill the pool before this probe, and how many of them were refused. */
  burst: number;
  burst429: number;
  firstStatus: number;
  retryAfterMs?: number;
  /** The same request sent two buckets before the told time: a 429 there means the figure was not slack by that much. */
  early?: { status: number; retryAfterMs?: number; gatewayAttempts: number };
  /** The honoured retry; gatewayAttempts 1 with a 200 means no deployment refused it on the way. */
  retry?: { status: number; gatewayAttempts: number; deployment?: string; waitedMs: number; retryAfterMs?: number };
  /** Why an 'error' cycle ended the series: the series' deadline came before what it waited for. */
  unmeasured?: string;
}

export interface ProbeReport {
  policy: Policy;
  pool: string;
  cycles: ProbeCycle[];
  /** Probes that got a 429 and whose retry time was honoured. */
  probed: number;
  /** Honoured retries that got 200 at the first deployment tried (no upstream 429 on the way), early copy refused. */
  clean: number;
  retryOk: number;
  /** Honoured retries that the gateway admitted and a deployment then throttled (failover or 429 after attempts). */
  retryThrottledUpstream: number;
  /** Probes told more than two buckets, which sent an early copy two buckets before the told time. */
  earlySent: number;
  /** Of those, early copies admitted: the figure was slack by two buckets or more. */
  earlyAdmitted: number;
  retryAfterMs: Summary | null;
}

/** One probe series' requests, all bounded by its deadline. */
class ProbeSeries {
  readonly t0 = performance.now();
  // Every step (filling, the probe, the told wait, the retry, the final drain) ends by this deadline:
  // the series ends with its report inside the run's hard cap, which counts PROBE_SERIES_CAP_MS for it.
  readonly deadline = this.t0 + PROBE_SERIES_CAP_MS;
  private readonly settled: Promise<Answer>[] = [];
  private gatewayIndex = 0;
  private readonly client: Client;
  private readonly path: string;
  private readonly body: Buffer;
  private readonly streamBody: Buffer;

  constructor(client: Client, path: string, body: Buffer) {
    this.client = client;
    this.path = path;
    this.body = body;
    // The burst streams, so that an admitted request's head comes at its first token, not after the whole
    // completion: once every head is in, every request of the burst has been decided.
    this.streamBody = Buffer.from(JSON.stringify({ ...(JSON.parse(body.toString()) as Record<string, unknown>), stream: true }));
  }

  left(): number {
    return Math.max(0, this.deadline - performance.now());
  }

  /** One request; undefined when the deadline comes first (the request is cut with the rest at the end). */
  send(): Promise<Answer | undefined> {
    const answer = this.client.post(this.gatewayIndex++, this.path, this.body, this.t0);
    this.settled.push(answer);
    return within(answer, this.left(), undefined);
  }

  /** Resolves with the status once the answer's head is in (every upstream try of it is over by then). */
  head(): Promise<number> {
    return new Promise<number>((resolvePromise) => {
      this.settled.push(this.client.post(this.gatewayIndex++, this.path, this.streamBody, this.t0, resolvePromise));
    });
  }

  /** Let the burst requests finish before the simulator is reset (within the deadline), then cut the rest. */
  async finish(): Promise<void> {
    await within(Promise.all(this.settled), Math.min(DRAIN_MS, this.left()), undefined);
    this.client.cutAll();
  }
}

/** Bursts until one of them has a request refused: the pool is full. */
async function fillPool(series: ProbeSeries, burstSize: number): Promise<{ burst: number; burst429: number }> {
  let burst = 0;
  let burst429 = 0;
  for (let batch = 0; batch < PROBE_FILL_BATCHES && burst429 === 0 && !sendingStopped() && series.left() > 0; batch++) {
    const statuses = await within(
      Promise.all(Array.from({ length: burstSize }, () => series.head())),
      Math.min(REQUEST_TIMEOUT_MS, series.left()),
      [] as number[],
    );
    burst += burstSize;
    burst429 += statuses.filter((status) => status === 429).length;
  }
  return { burst, burst429 };
}

/** One cycle: fill, probe, honour; `last` when the series' deadline ends it. */
async function probeCycle(series: ProbeSeries, burstSize: number, bucketMs: number): Promise<{ cycle: ProbeCycle; last?: boolean }> {
  const filled = await fillPool(series, burstSize);
  if (filled.burst429 === 0) return { cycle: { kind: 'error', ...filled, firstStatus: 0 } };
  const first = await series.send();
  const toldAt = performance.now();
  if (first === undefined)
    return { cycle: { kind: 'error', ...filled, firstStatus: 0, unmeasured: 'no answer to the probe before the deadline' }, last: true };
  const told = first.retryAfterMs;
  if (first.status === 200) return { cycle: { kind: 'room', ...filled, firstStatus: 200 } };
  if (first.status !== 429 || told === undefined) return { cycle: { kind: 'error', ...filled, firstStatus: first.status } };
  const refused = { ...filled, firstStatus: 429, retryAfterMs: told };
  // Waiting past the deadline would overrun the series: this retry time cannot be checked.
  if (toldAt + told >= series.deadline)
    return { cycle: { kind: 'error', ...refused, unmeasured: 'the told retry time falls after the deadline' }, last: true };
  return honourProbe(series, refused, toldAt, bucketMs);
}

/** An early copy two buckets before the told time (when there is room for it), then the retry at the told time. */
async function honourProbe(
  series: ProbeSeries,
  refused: { burst: number; burst429: number; firstStatus: number; retryAfterMs: number },
  toldAt: number,
  bucketMs: number,
): Promise<{ cycle: ProbeCycle; last?: boolean }> {
  const told = refused.retryAfterMs;
  let early: Answer | undefined;
  if (told - 2 * bucketMs > 5) {
    await sleepUntil(toldAt + told - 2 * bucketMs);
    early = await series.send();
  }
  await sleepUntil(toldAt + told);
  const waitedMs = performance.now() - toldAt;
  const retry = await series.send();
  if (retry === undefined)
    return { cycle: { kind: 'error', ...refused, unmeasured: 'no answer to the honoured retry before the deadline' }, last: true };
  const cycle: ProbeCycle = {
    kind: 'probed',
    ...refused,
    ...(early
      ? {
          early: {
            status: early.status,
            gatewayAttempts: early.gatewayAttempts,
            ...(early.retryAfterMs !== undefined ? { retryAfterMs: early.retryAfterMs } : {}),
          },
        }
      : {}),
    retry: {
      status: retry.status,
      gatewayAttempts: retry.gatewayAttempts,
      waitedMs,
      ...(retry.deployment ? { deployment: retry.deployment } : {}),
      ...(retry.retryAfterMs !== undefined ? { retryAfterMs: retry.retryAfterMs } : {}),
    },
  };
  return { cycle };
}

/**
 * After an overload phase: fill the pool with a burst (streaming requests of the same cost), wait until
 * every request of it has its answer head (so each is decided, upstream tries included), then send one
 * request. If it is refused, honour
 * its retry time exactly (from the arrival of its 429), with nothing else arriving, and check that the
 * retry gets 200 at the first deployment tried. A copy sent two buckets before the told time must be
 * refused too (else the figure was slack). If the probe is admitted (room freed while the burst
 * settled), the cycle is skipped and the pool filled again.
 */
export async function honestyProbe(
  stack: Stack,
  settings: Settings,
  policy: Policy,
  pool: string,
  burstSize: number,
  body: Buffer,
): Promise<ProbeReport> {
  const series = new ProbeSeries(stack.client, requestPath(pool), body);
  const cycles: ProbeCycle[] = [];
  let probed = 0;
  for (let cycle = 0; cycle < settings.probes * 4 && probed < settings.probes && !sendingStopped() && series.left() > 0; cycle++) {
    const outcome = await probeCycle(series, burstSize, settings.windowMs / 60);
    cycles.push(outcome.cycle);
    if (outcome.cycle.kind === 'probed') probed += 1;
    if (outcome.last) break;
  }
  await series.finish();
  return probeReport(policy, pool, cycles);
}

function probeReport(policy: Policy, pool: string, cycles: ProbeCycle[]): ProbeReport {
  const probedCycles = cycles.filter((c) => c.kind === 'probed');
  return {
    policy,
    pool,
    cycles,
    probed: probedCycles.length,
    clean: probedCycles.filter((c) => c.retry?.status === 200 && c.retry.gatewayAttempts === 1 && c.early?.status !== 200).length,
    retryOk: probedCycles.filter((c) => c.retry?.status === 200).length,
    retryThrottledUpstream: probedCycles.filter((c) => (c.retry?.gatewayAttempts ?? 0) > (c.retry?.status === 200 ? 1 : 0)).length,
    earlySent: probedCycles.filter((c) => c.early).length,
    earlyAdmitted: probedCycles.filter((c) => c.early?.status === 200).length,
    retryAfterMs: summarize(probedCycles.map((c) => c.retryAfterMs ?? 0)),
  };
}
