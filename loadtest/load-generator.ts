/**
 * The load generator: a separate process (forked with an IPC channel by driver.ts and bench.ts) so
 * that its CPU is its own and measurable. It runs one RunSpec at a time and answers with a RunResult.
 *
 * HTTP: node:http with keep-alive agents (one per target and size, reused across runs). Latency is
 * measured from just before the request is written to the response's end; TTFT of a stream is the
 * time to the first SSE event that carries content (delta.content or text), read as it arrives.
 *
 * It exits when its parent disconnects, so it cannot outlive the orchestrator.
 */
import { Agent } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { loopbackUrl, sendOnce } from './lib/http-client.ts';
import type { FromGenerator, PreparedRequest, RequestBreakdown, RunResult, RunSpec, TimelinePoint, ToGenerator } from './lib/protocol.ts';
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

/** Seed of the mix's random picks: the same for every run, so runs against different targets send the same sequence. */
const MIX_SEED = 1;

/** Offsets (ms from the start) of the open model's arrivals: arrival k is when the integral of the
 *  piecewise-linear rate reaches k. */
class ArrivalSchedule {
  private readonly segments: { startMs: number; durationMs: number; from: number; to: number; before: number; area: number }[] = [];
  readonly total: number;
  readonly endMs: number;

  constructor(startRate: number, stages: { durationMs: number; target: number }[]) {
    let startMs = 0;
    let before = 0;
    let from = startRate;
    for (const stage of stages) {
      const area = ((from + stage.target) / 2) * (stage.durationMs / 1000);
      this.segments.push({ startMs, durationMs: stage.durationMs, from, to: stage.target, before, area });
      startMs += stage.durationMs;
      before += area;
      from = stage.target;
    }
    this.total = Math.floor(before + 1e-9);
    this.endMs = startMs;
  }

  /** When arrival k (0-based) is due. */
  at(k: number): number {
    for (const segment of this.segments) {
      if (k >= segment.before + segment.area || segment.area === 0) continue;
      const need = k - segment.before;
      const seconds = segment.durationMs / 1000;
      const slope = (segment.to - segment.from) / seconds;
      // from·s + slope·s²/2 = need
      const s =
        Math.abs(slope) < 1e-12 ? need / segment.from : (-segment.from + Math.sqrt(segment.from * segment.from + 2 * slope * need)) / slope;
      return segment.startMs + Math.min(seconds, Math.max(0, s)) * 1000;
    }
    return this.endMs;
  }
}

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
  latencyMs: number;
  ttfbMs: number;
  ttftMs: number;
  streamComplete: boolean;
  retryAfter: boolean;
}

async function run(id: number, spec: RunSpec): Promise<RunResult> {
  const url = loopbackUrl(spec.baseUrl);
  const sockets = spec.mode.kind === 'open' ? spec.mode.maxInFlight : spec.mode.concurrency;
  const agent = agentFor(spec.baseUrl, sockets);
  const ok = new Set(spec.okStatuses);
  const random = prng(MIX_SEED);
  const totalWeight = spec.requests.reduce((acc, r) => acc + r.weight, 0);
  const prepared = spec.requests.map((r) => ({
    request: r,
    body: Buffer.from(r.body),
    headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(r.body)), 'api-key': spec.apiKey },
  }));
  const pick = () => {
    let left = random() * totalWeight;
    for (const entry of prepared) {
      left -= entry.request.weight;
      if (left < 0) return entry;
    }
    return prepared[prepared.length - 1]!;
  };

  // Accumulators.
  const statuses: Record<string, number> = {};
  const latency = new Samples();
  const byStatus = new Map<string, Samples>();
  const latency200 = new Samples();
  const ttfb = new Samples();
  const ttft = new Samples();
  const lag = new Samples();
  const perRequest = new Map<string, { count: number; errors: number; latency: Samples; ttft: Samples }>();
  const timeline: { sent: number; completed: number; ok200: number; throttled: number; errors: number; latencies: number[] }[] = [];
  let sent = 0;
  let completed = 0;
  let completedInLoad = 0;
  let errors = 0;
  let dropped = 0;
  let incompleteStreams = 0;
  let retryAfterMissing = 0;
  let inFlight = 0;
  let loadDone = false;
  const live = new Set<() => void>();
  const cpuBefore = process.cpuUsage();
  const t0 = performance.now();
  const second = (at: number) => {
    const index = Math.max(0, Math.floor((at - t0) / 1000));
    while (timeline.length <= index) timeline.push({ sent: 0, completed: 0, ok200: 0, throttled: 0, errors: 0, latencies: [] });
    return timeline[index]!;
  };
  let idle: (() => void) | undefined;

  const record = (outcome: Outcome) => {
    completed += 1;
    if (!loadDone) completedInLoad += 1;
    const key = outcome.status === 0 ? (outcome.error ?? 'error') : String(outcome.status);
    statuses[key] = (statuses[key] ?? 0) + 1;
    const isError =
      outcome.status === 0 || !ok.has(outcome.status) || (outcome.status === 200 && outcome.request.stream && !outcome.streamComplete);
    if (isError) errors += 1;
    const bucket = second(performance.now());
    bucket.completed += 1;
    if (isError) bucket.errors += 1;
    let stats = perRequest.get(outcome.request.name);
    if (!stats) perRequest.set(outcome.request.name, (stats = { count: 0, errors: 0, latency: new Samples(), ttft: new Samples() }));
    stats.count += 1;
    if (isError) stats.errors += 1;
    if (outcome.status !== 0) {
      latency.push(outcome.latencyMs);
      let samples = byStatus.get(key);
      if (!samples) byStatus.set(key, (samples = new Samples()));
      samples.push(outcome.latencyMs);
    }
    if (outcome.status === 429) {
      bucket.throttled += 1;
      if (!outcome.retryAfter) retryAfterMissing += 1;
    }
    if (outcome.status === 200) {
      bucket.ok200 += 1;
      bucket.latencies.push(outcome.latencyMs);
      latency200.push(outcome.latencyMs);
      stats.latency.push(outcome.latencyMs);
      ttfb.push(outcome.ttfbMs);
      if (outcome.request.stream) {
        if (!outcome.streamComplete) incompleteStreams += 1;
        if (!Number.isNaN(outcome.ttftMs)) {
          ttft.push(outcome.ttftMs);
          stats.ttft.push(outcome.ttftMs);
        }
      }
    }
  };

  const fire = (): Promise<void> => {
    const entry = pick();
    sent += 1;
    inFlight += 1;
    second(performance.now()).sent += 1;
    return new Promise<void>((resolve) => {
      const start = performance.now();
      let ttfbMs = Number.NaN;
      let ttftMs = Number.NaN;
      let tail = '';
      const cut = sendOnce(
        { agent, hostname: url.hostname, port: url.port, method: 'POST', path: entry.request.path, headers: entry.headers },
        entry.body,
        spec.requestTimeoutMs,
        (res) => {
          ttfbMs = performance.now() - start;
          if (entry.request.stream && res.statusCode === 200) {
            const first = new FirstContent();
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => {
              if (Number.isNaN(ttftMs) && first.push(chunk)) ttftMs = performance.now() - start;
              tail = (tail + chunk).slice(-64);
            });
          } else {
            res.resume();
          }
        },
        (ending) => {
          live.delete(cut);
          inFlight -= 1;
          record({
            request: entry.request,
            status: ending.status,
            ...(ending.error !== undefined ? { error: ending.error } : {}),
            latencyMs: performance.now() - start,
            ttfbMs,
            ttftMs,
            streamComplete: ending.error === undefined && tail.includes('data: [DONE]'),
            retryAfter: ending.headers?.['retry-after'] !== undefined,
          });
          resolve();
          if (inFlight === 0) idle?.();
        },
      );
      live.add(cut);
    });
  };

  const progress = setInterval(() => {
    send({ type: 'progress', id, elapsedMs: Math.round(performance.now() - t0), sent, completed, inFlight, errors });
  }, 1000);

  let loadMs: number;
  let capped = false;
  if (spec.mode.kind === 'open') {
    const { maxInFlight } = spec.mode;
    const schedule = new ArrivalSchedule(spec.mode.startRate, spec.mode.stages);
    await new Promise<void>((resolve) => {
      let k = 0;
      const tick = () => {
        const now = performance.now() - t0;
        while (k < schedule.total) {
          const due = schedule.at(k);
          if (due > now) break;
          if (sent >= spec.maxRequests) {
            capped = true;
            break;
          }
          if (inFlight >= maxInFlight) dropped += 1;
          else {
            lag.push(now - due);
            void fire();
          }
          k += 1;
        }
        if (k >= schedule.total || capped) {
          // Hold the load phase until the stages' end, so rates compare across runs.
          const rest = capped ? 0 : schedule.endMs - (performance.now() - t0);
          setTimeout(resolve, Math.max(0, rest));
          return;
        }
        setTimeout(tick, Math.max(0, schedule.at(k) - (performance.now() - t0)));
      };
      tick();
    });
    loadMs = performance.now() - t0;
  } else {
    const end = t0 + spec.mode.durationMs;
    const worker = async () => {
      while (performance.now() < end && sent < spec.maxRequests) await fire();
      if (sent >= spec.maxRequests) capped = true;
    };
    const workers = Array.from({ length: spec.mode.concurrency }, worker);
    // The load phase ends at the deadline; requests in flight then finish during the drain.
    await sleep(Math.max(0, end - performance.now()));
    loadMs = performance.now() - t0;
    void Promise.all(workers);
  }
  loadDone = true;

  // Drain: wait for what is in flight, at most drainMs; then cut it.
  const drainStart = performance.now();
  if (inFlight > 0) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, spec.drainMs);
      idle = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
  const unfinished = live.size;
  for (const cut of [...live]) cut();
  const drainMs = performance.now() - drainStart;
  clearInterval(progress);
  const cpu = process.cpuUsage(cpuBefore);

  const byRequest: Record<string, RequestBreakdown> = {};
  for (const [name, stats] of perRequest)
    byRequest[name] = { count: stats.count, errors: stats.errors, latency: stats.latency.summary(), ttft: stats.ttft.summary() };
  const latencyByStatus: Record<string, ReturnType<Samples['summary']> & object> = {};
  for (const [status, samples] of byStatus) {
    const summary = samples.summary();
    if (summary) latencyByStatus[status] = summary;
  }
  const points: TimelinePoint[] = timeline.map((bucket, index) => {
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
  return {
    mode: spec.mode.kind,
    loadMs: Math.round(loadMs),
    drainMs: Math.round(drainMs),
    sent,
    completed,
    completedInLoad,
    dropped,
    unfinished,
    capped,
    statuses,
    errors,
    errorRate: completed === 0 ? 0 : errors / completed,
    rps: (spec.mode.kind === 'closed' ? completedInLoad : completed) / (loadMs / 1000),
    latency: latency.summary(),
    latencyByStatus,
    ttfb: ttfb.summary(),
    ttft: ttft.summary(),
    incompleteStreams,
    retryAfterMissing,
    byRequest,
    lag: lag.summary(),
    timeline: points,
    generatorCpuMs: Math.round((cpu.user + cpu.system) / 1000),
    ...(spec.returnSamples ? { samples: { latency200: Array.from(latency200.values()), ttft: Array.from(ttft.values()) } } : {}),
  };
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
