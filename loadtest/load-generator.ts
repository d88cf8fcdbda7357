/**
 * The load generator: a separate process (forked with an IPC channel by driver.ts and bench.ts) so
 * that its CPU is its own and measurable. It runs one RunSpec at a time and answers with a RunResult.
 *
 * HTTP: node:http with keep-alive agents (one per target and size, reused across runs). Latency is
 * measured from just before the request is written to the response's end; TTFT of a stream is the
 * time to the first SSE event that carries content (delta.content or text), read as it arrives.
 * A 2xx counts as served only when its body completed: a stream must carry data: [DONE], a plain
 * body must parse as JSON; otherwise it is `broken` (lib/outcome.ts), an error.
 *
 * It exits when its parent disconnects, so it cannot outlive the orchestrator.
 */
import { Agent } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { loopbackUrl, sendOnce } from './lib/http-client.ts';
import { classify, jsonComplete } from './lib/outcome.ts';
import { arrivalSchedule, dispatchArrivals } from './lib/arrivals.ts';
import {
  OUTCOME_CLASSES,
  type ArrivalRecord,
  type FromGenerator,
  type LoadMode,
  type OutcomeClass,
  type PreparedRequest,
  type RequestBreakdown,
  type RunResult,
  type RunSpec,
  type TimelinePoint,
  type ToGenerator,
} from './lib/protocol.ts';
import { prng } from './lib/random.ts';
import { Samples, summarize } from './lib/stats.ts';

if (!process.send) {
  console.error('load-generator.ts is started by loadtest/driver.ts or loadtest/bench.ts (it needs an IPC channel)');
  process.exit(2);
}

const send = (message: FromGenerator) => process.send?.(message);
const agents = new Map<string, Agent>();

function agentFor(baseUrl: string, sockets: number): Agent {
  const key = `${baseUrl} ${sockets}`;
  let agent = agents.get(key);
  if (!agent) {
    agent = new Agent({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets, scheduling: 'lifo', timeout: 120_000 });
    agents.set(key, agent);
  }
  return agent;
}

/** Plain bodies longer than this are not checked (counted whole when they ended cleanly). */
const MAX_CHECKED_BODY_CHARS = 16 * 1024 * 1024;

/** Epoch milliseconds at sub-millisecond resolution, comparable with other processes' (the chaos report's). */
const epochMs = () => performance.timeOrigin + performance.now();

/** Seed of the mix's random picks: the same for every run, so runs against different targets send the same sequence. */
const MIX_SEED = 1;

/** True when the SSE text holds an event with content; consumed complete events are dropped. */
class FirstContent {
  private buffer = '';

  push(chunk: string): boolean {
    this.buffer += chunk;
    let end = this.buffer.indexOf('\n\n');
    while (end !== -1) {
      const event = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      if (hasContent(event)) return true;
      end = this.buffer.indexOf('\n\n');
    }
    return false;
  }
}

function hasContent(event: string): boolean {
  for (const line of event.split('\n')) {
    if (!line.startsWith('data:')) continue;
    const data = line.slice(5).trim();
    if (data === '[DONE]') return false;
    try {
      const parsed = JSON.parse(data) as { choices?: { delta?: { content?: unknown }; text?: unknown }[] };
      const choice = parsed.choices?.[0];
      const content = choice?.delta?.content ?? choice?.text;
      if (typeof content === 'string' && content !== '') return true;
    } catch {
      // not JSON: not content
    }
  }
  return false;
}

interface Outcome {
  request: PreparedRequest;
  /** HTTP status, or 0 with `error` set. */
  status: number;
  error?: string;
  /** When it was sent, epoch ms. */
  sentAt: number;
  latencyMs: number;
  ttfbMs: number;
  ttftMs: number;
  streamComplete: boolean;
  retryAfter: boolean;
  outcome: OutcomeClass;
}

/** A request of the mix, ready to write. */
interface MixEntry {
  request: PreparedRequest;
  body: Buffer;
  headers: Record<string, string>;
}

/** The run's requests with their bodies and headers, and a seeded pick by weight. */
function prepareMix(spec: RunSpec): () => MixEntry {
  const random = prng(MIX_SEED);
  const totalWeight = spec.requests.reduce((acc, r) => acc + r.weight, 0);
  const prepared = spec.requests.map((r) => ({
    request: r,
    body: Buffer.from(r.body),
    headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(r.body)), 'api-key': spec.apiKey },
  }));
  return () => {
    let left = random() * totalWeight;
    for (const entry of prepared) {
      left -= entry.request.weight;
      if (left < 0) return entry;
    }
    return prepared[prepared.length - 1]!;
  };
}

interface Bucket {
  sent: number;
  completed: number;
  ok200: number;
  throttled: number;
  errors: number;
  latencies: number[];
}

/** What one run counts: every request sent and how it ended, overall, per second, per request kind. */
class Tally {
  readonly statuses: Record<string, number> = {};
  readonly latency = new Samples();
  readonly byStatus = new Map<string, Samples>();
  readonly latency200 = new Samples();
  readonly ttfb = new Samples();
  readonly ttft = new Samples();
  readonly lag = new Samples();
  readonly perRequest = new Map<string, { count: number; errors: number; latency: Samples; ttft: Samples }>();
  readonly timeline: Bucket[] = [];
  sent = 0;
  completed = 0;
  completedInLoad = 0;
  errors = 0;
  dropped = 0;
  incompleteStreams = 0;
  broken = 0;
  retryAfterMissing = 0;
  loadDone = false;
  readonly outcomes = Object.fromEntries(OUTCOME_CLASSES.map((c) => [c, 0])) as Record<OutcomeClass, number>;
  /** Every arrival, when the spec asks for them. */
  readonly arrivals: ArrivalRecord[] | undefined;
  readonly t0: number;
  private readonly ok: Set<number>;

  constructor(t0: number, okStatuses: number[], recordArrivals = false) {
    this.t0 = t0;
    this.ok = new Set(okStatuses);
    this.arrivals = recordArrivals ? [] : undefined;
  }

  /** An arrival not sent (maxInFlight in flight). */
  countDropped(): void {
    this.dropped += 1;
    this.outcomes.dropped += 1;
    this.arrivals?.push({ at: epochMs(), request: '', outcome: 'dropped', status: 0, latencyMs: 0 });
  }

  second(at: number): Bucket {
    const index = Math.max(0, Math.floor((at - this.t0) / 1000));
    while (this.timeline.length <= index) this.timeline.push({ sent: 0, completed: 0, ok200: 0, throttled: 0, errors: 0, latencies: [] });
    return this.timeline[index]!;
  }

  countSent(): void {
    this.sent += 1;
    this.second(performance.now()).sent += 1;
  }

  record(outcome: Outcome): void {
    this.completed += 1;
    if (!this.loadDone) this.completedInLoad += 1;
    const key = outcome.status === 0 ? (outcome.error ?? 'error') : String(outcome.status);
    this.statuses[key] = (this.statuses[key] ?? 0) + 1;
    this.outcomes[outcome.outcome] += 1;
    if (outcome.outcome === 'broken') this.broken += 1;
    this.arrivals?.push({
      at: outcome.sentAt,
      request: outcome.request.name,
      outcome: outcome.outcome,
      status: outcome.status,
      ...(outcome.error !== undefined ? { error: outcome.error } : {}),
      latencyMs: Math.round(outcome.latencyMs * 10) / 10,
    });
    const isError = outcome.status === 0 || !this.ok.has(outcome.status) || outcome.outcome === 'broken';
    if (isError) this.errors += 1;
    const bucket = this.second(performance.now());
    bucket.completed += 1;
    if (isError) bucket.errors += 1;
    let stats = this.perRequest.get(outcome.request.name);
    if (!stats) this.perRequest.set(outcome.request.name, (stats = { count: 0, errors: 0, latency: new Samples(), ttft: new Samples() }));
    stats.count += 1;
    if (isError) stats.errors += 1;
    if (outcome.status !== 0) {
      this.latency.push(outcome.latencyMs);
      let samples = this.byStatus.get(key);
      if (!samples) this.byStatus.set(key, (samples = new Samples()));
      samples.push(outcome.latencyMs);
    }
    if (outcome.status === 429) {
      bucket.throttled += 1;
      if (!outcome.retryAfter) this.retryAfterMissing += 1;
    }
    if (outcome.status === 200) this.recordOk(outcome, bucket, stats);
  }

  private recordOk(outcome: Outcome, bucket: Bucket, stats: { latency: Samples; ttft: Samples }): void {
    bucket.ok200 += 1;
    bucket.latencies.push(outcome.latencyMs);
    this.latency200.push(outcome.latencyMs);
    stats.latency.push(outcome.latencyMs);
    this.ttfb.push(outcome.ttfbMs);
    if (outcome.request.stream) {
      if (!outcome.streamComplete) this.incompleteStreams += 1;
      if (!Number.isNaN(outcome.ttftMs)) {
        this.ttft.push(outcome.ttftMs);
        stats.ttft.push(outcome.ttftMs);
      }
    }
  }
}

/** Sends the mix's requests to the target and tracks those in flight, so that the drain can wait for them or cut them. */
class Sender {
  inFlight = 0;
  private readonly live = new Set<() => void>();
  private readonly url: URL;
  private readonly agent: Agent;
  private readonly spec: RunSpec;
  private readonly pick: () => MixEntry;
  private readonly tally: Tally;
  private idle: (() => void) | undefined;

  constructor(spec: RunSpec, pick: () => MixEntry, tally: Tally) {
    this.spec = spec;
    this.pick = pick;
    this.tally = tally;
    this.url = loopbackUrl(spec.baseUrl);
    this.agent = agentFor(spec.baseUrl, spec.mode.kind === 'open' ? spec.mode.maxInFlight : spec.mode.concurrency);
  }

  /** One request of the mix; resolves when it ended (and was recorded). */
  fire(): Promise<void> {
    const entry = this.pick();
    this.tally.countSent();
    this.inFlight += 1;
    return new Promise<void>((resolve) => {
      const sentAt = epochMs();
      const start = performance.now();
      let ttfbMs = Number.NaN;
      let ttftMs = Number.NaN;
      let tail = '';
      let headStatus: number | undefined;
      /** A plain 2xx body, kept to check that it is whole; undefined when not checked. */
      let body: string | undefined;
      const { agent, url } = this;
      const cut = sendOnce(
        { agent, hostname: url.hostname, port: url.port, method: 'POST', path: entry.request.path, headers: entry.headers },
        entry.body,
        this.spec.requestTimeoutMs,
        (res) => {
          ttfbMs = performance.now() - start;
          headStatus = res.statusCode ?? 0;
          const success = headStatus >= 200 && headStatus < 300;
          if (entry.request.stream && success) {
            const first = new FirstContent();
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => {
              if (Number.isNaN(ttftMs) && first.push(chunk)) ttftMs = performance.now() - start;
              tail = (tail + chunk).slice(-64);
            });
          } else if (success) {
            body = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => {
              if (body !== undefined) body = body.length + chunk.length > MAX_CHECKED_BODY_CHARS ? undefined : body + chunk;
            });
          } else {
            res.resume();
          }
        },
        (ending) => {
          this.live.delete(cut);
          this.inFlight -= 1;
          const streamComplete = ending.error === undefined && tail.includes('data: [DONE]');
          const bodyComplete = entry.request.stream ? streamComplete : body === undefined || jsonComplete(body);
          this.tally.record({
            request: entry.request,
            status: ending.status,
            ...(ending.error !== undefined ? { error: ending.error } : {}),
            sentAt,
            latencyMs: performance.now() - start,
            ttfbMs,
            ttftMs,
            streamComplete,
            retryAfter: ending.headers?.['retry-after'] !== undefined,
            outcome: classify({ headStatus, error: ending.error, bodyComplete }),
          });
          resolve();
          if (this.inFlight === 0) this.idle?.();
        },
      );
      this.live.add(cut);
    });
  }

  /** Waits for what is in flight, at most `ms`; then cuts the rest and returns how many were cut. */
  async drain(ms: number): Promise<number> {
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        this.idle = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    const unfinished = this.live.size;
    for (const cut of [...this.live]) cut();
    return unfinished;
  }
}

/** How the load phase ended; `capped` is read after the drain (a closed-loop worker may hit the cap then). */
interface LoadPhase {
  loadMs: number;
  capped: () => boolean;
}

/** Open model: the stages' arrivals on time, whatever the responses do; arrivals at maxInFlight are dropped. */
async function runOpen(mode: Extract<LoadMode, { kind: 'open' }>, maxRequests: number, tally: Tally, sender: Sender): Promise<LoadPhase> {
  const schedule = arrivalSchedule({ spacing: 'ramp', startRate: mode.startRate, stages: mode.stages });
  const { stopped } = await dispatchArrivals(schedule, tally.t0, (_k, due, now) => {
    if (tally.sent >= maxRequests) return false;
    if (sender.inFlight >= mode.maxInFlight) tally.countDropped();
    else {
      tally.lag.push(now - due);
      void sender.fire();
    }
    return true;
  });
  return { loadMs: performance.now() - tally.t0, capped: () => stopped };
}

/** Closed model: `concurrency` workers, each sending its next request when the previous one ended. */
async function runClosed(
  mode: Extract<LoadMode, { kind: 'closed' }>,
  maxRequests: number,
  tally: Tally,
  sender: Sender,
): Promise<LoadPhase> {
  const end = tally.t0 + mode.durationMs;
  let capped = false;
  const worker = async () => {
    while (performance.now() < end && tally.sent < maxRequests) await sender.fire();
    if (tally.sent >= maxRequests) capped = true;
  };
  const workers = Array.from({ length: mode.concurrency }, worker);
  // The load phase ends at the deadline; requests in flight then finish during the drain.
  await sleep(Math.max(0, end - performance.now()));
  const loadMs = performance.now() - tally.t0;
  void Promise.all(workers);
  return { loadMs, capped: () => capped };
}

function timelineOf(tally: Tally): TimelinePoint[] {
  return tally.timeline.map((bucket, index) => {
    const summary = summarize(bucket.latencies);
    return {
      second: index,
      sent: bucket.sent,
      completed: bucket.completed,
      ok200: bucket.ok200,
      throttled: bucket.throttled,
      errors: bucket.errors,
      p50: summary?.p50 ?? null,
      p95: summary?.p95 ?? null,
    };
  });
}

function resultOf(
  spec: RunSpec,
  tally: Tally,
  load: LoadPhase,
  drain: { ms: number; unfinished: number },
  cpu: NodeJS.CpuUsage,
): RunResult {
  const byRequest: Record<string, RequestBreakdown> = {};
  for (const [name, stats] of tally.perRequest)
    byRequest[name] = { count: stats.count, errors: stats.errors, latency: stats.latency.summary(), ttft: stats.ttft.summary() };
  const latencyByStatus: Record<string, ReturnType<Samples['summary']> & object> = {};
  for (const [status, samples] of tally.byStatus) {
    const summary = samples.summary();
    if (summary) latencyByStatus[status] = summary;
  }
  const { completed } = tally;
  return {
    mode: spec.mode.kind,
    loadMs: Math.round(load.loadMs),
    drainMs: Math.round(drain.ms),
    sent: tally.sent,
    completed,
    completedInLoad: tally.completedInLoad,
    dropped: tally.dropped,
    unfinished: drain.unfinished,
    capped: load.capped(),
    statuses: tally.statuses,
    errors: tally.errors,
    errorRate: completed === 0 ? 0 : tally.errors / completed,
    rps: (spec.mode.kind === 'closed' ? tally.completedInLoad : completed) / (load.loadMs / 1000),
    latency: tally.latency.summary(),
    latencyByStatus,
    ttfb: tally.ttfb.summary(),
    ttft: tally.ttft.summary(),
    incompleteStreams: tally.incompleteStreams,
    broken: tally.broken,
    outcomes: tally.outcomes,
    ...(tally.arrivals ? { arrivals: tally.arrivals } : {}),
    retryAfterMissing: tally.retryAfterMissing,
    byRequest,
    lag: tally.lag.summary(),
    timeline: timelineOf(tally),
    generatorCpuMs: Math.round((cpu.user + cpu.system) / 1000),
    ...(spec.returnSamples
      ? { samples: { latency200: Array.from(tally.latency200.values()), ttft: Array.from(tally.ttft.values()) } }
      : {}),
  };
}

/** One run: the load phase (open or closed), the drain, the figures. */
async function run(id: number, spec: RunSpec): Promise<RunResult> {
  const pick = prepareMix(spec);
  const cpuBefore = process.cpuUsage();
  const tally = new Tally(performance.now(), spec.okStatuses, spec.recordArrivals);
  const sender = new Sender(spec, pick, tally);
  const progress = setInterval(() => {
    const { sent, completed, errors } = tally;
    send({ type: 'progress', id, elapsedMs: Math.round(performance.now() - tally.t0), sent, completed, inFlight: sender.inFlight, errors });
  }, 1000);
  const load =
    spec.mode.kind === 'open'
      ? await runOpen(spec.mode, spec.maxRequests, tally, sender)
      : await runClosed(spec.mode, spec.maxRequests, tally, sender);
  tally.loadDone = true;
  const drainStart = performance.now();
  const unfinished = await sender.drain(spec.drainMs);
  const drain = { ms: performance.now() - drainStart, unfinished };
  clearInterval(progress);
  return resultOf(spec, tally, load, drain, process.cpuUsage(cpuBefore));
}

let busy = false;
process.on('message', (message: ToGenerator) => {
  if (message.type === 'stop') {
    for (const agent of agents.values()) agent.destroy();
    process.exit(0);
  }
  if (message.type !== 'run') return;
  if (busy) {
    send({ type: 'failed', id: message.id, message: 'the generator is already running a load' });
    return;
  }
  busy = true;
  run(message.id, message.spec).then(
    (result) => {
      busy = false;
      send({ type: 'result', id: message.id, result });
    },
    (error: unknown) => {
      busy = false;
      send({ type: 'failed', id: message.id, message: error instanceof Error ? error.message : String(error) });
    },
  );
});
process.on('disconnect', () => process.exit(0));
send({ type: 'ready' });
