/**
 * Phase 1 of the scale bench: N streams at 1 token/s held open through one proxy, the gateway and the
 * bare Node proxy in turn (the order rotated every round), each step on a fresh proxy process so that
 * its memory starts from the same place. With N open: probe streams, alternately through the proxy
 * and straight to the simulator (added TTFT = proxy − direct, the same moment's simulator load on
 * both), the proxy's RSS and heap against its own reading before the load (per stream), its event-loop
 * delay over the probes, and every stream that failed (by cause).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { fmt } from '../lib/format.ts';
import { summarize, type Summary } from '../lib/stats.ts';
import { mergeCounts, type StreamFleet } from './stream-fleet.ts';
import type { ErrorCounts, StreamTarget } from './stream-protocol.ts';
import { directTarget, startProxy, type ProxyKind, type ProxyReading, type ScaleStack } from './stack.ts';

export interface ConcurrencySettings {
  levels: number[];
  rounds: number;
  /** New streams per second while a level opens. */
  openPerSecond: number;
  /** Probes through the proxy at each step (as many go direct). */
  probes: number;
  /** Streams opened and closed on a fresh proxy before its baseline reading (JIT, pools). */
  warmStreams: number;
}

export interface ConcurrencyStep {
  round: number;
  level: number;
  proxy: ProxyKind;
  open: number;
  /**
   * Failed before their first token, by cause; 'not open when measured': neither open nor failed
   * when the step read its figures (waiting for a first token, e.g. behind a full accept queue).
   */
  failed: ErrorCounts;
  /** Streams that had no first token yet when the open's settle time ran out (most open later). */
  lateOpen: number;
  /** Broke while held open, by cause. */
  broken: ErrorCounts;
  /** Probes through the proxy and direct; probe failures by cause. */
  probeTtft: Summary | null;
  directTtft: Summary | null;
  probeErrors: ErrorCounts;
  /** Percentiles through the proxy minus the same percentiles direct (two samples taken in alternation). */
  addedTtftP50: number | null;
  addedTtftP99: number | null;
  rssDeltaMb: number;
  heapDeltaMb: number | null;
  /** Per open stream, KB. */
  rssPerStreamKb: number | null;
  heapPerStreamKb: number | null;
  /** Live heap (after full collections, through the inspector) with N open against before, per stream open then, KB. */
  liveHeapPerStreamKb: number | null;
  lag: ProxyReading['lag'];
  openMs: number;
  /** The proxy process ended during the step: how, and its last log lines. */
  died?: string;
}

const log = (line: string) => process.stdout.write(`${line}\n`);
/** Probes are short streams: the first token arrives at once (ttft 0) and they are cut after it. */
const PROBE_TOKENS = 2;
const PROBE_GAP_MS = 40;
/** A pause before each memory reading, for the last writes and frees of what came before. */
const QUIET_MS = 300;
const PROBE_TIMEOUT_MS = 10_000;
/**
 * Held streams last the step and some (1 token a second) but not much more: the simulator builds a
 * stream's every event when it starts, so an hour of tokens per stream would make it the bottleneck.
 */
const HELD_MARGIN_S = 20;
/** The probes of one step stop after this long, however many are left (a loaded proxy answers in seconds). */
const PROBE_BUDGET_MS = 15_000;
const IDLE_TIMEOUT_MS = 30_000;
/** After the last stream is sent, how long the open waits for first tokens (a slow proxy, a queue). */
const SETTLE_MS = 10_000;
/** The simulator has finished the closed streams within this (they end when their socket closes). */
const DRAIN_TIMEOUT_MS = 15_000;

const total = (counts: ErrorCounts) => Object.values(counts).reduce((a, b) => a + b, 0);

async function drained(stack: ScaleStack): Promise<void> {
  const deadline = Date.now() + DRAIN_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const stats = await stack.simulator.stats().catch(() => undefined);
    if (stats && Object.values(stats).every((s) => s.inFlight === 0)) return;
    await sleep(100);
  }
  log('  (the simulator still had streams in flight after the drain timeout)');
}

async function warm(fleet: StreamFleet, stack: ScaleStack, count: number, target: StreamTarget) {
  await fleet.open({ ...target, count, perSecond: Math.max(count, 1) * 4, idleTimeoutMs: IDLE_TIMEOUT_MS, settleMs: 3000 });
  await fleet.close();
  await drained(stack);
}

/** Probes, alternately through the proxy and direct, one at a time: the two samples. */
async function probeBoth(fleet: StreamFleet, stack: ScaleStack, proxyTarget: StreamTarget, probes: number) {
  const direct = directTarget(stack, 'slow', PROBE_TOKENS);
  const viaProxy: number[] = [];
  const viaDirect: number[] = [];
  const errors: ErrorCounts = {};
  const until = performance.now() + PROBE_BUDGET_MS;
  for (let i = 0; i < probes && performance.now() < until; i++) {
    // Alternate which goes first, so that neither side always follows the other.
    const order = i % 2 === 0 ? [proxyTarget, direct] : [direct, proxyTarget];
    for (const target of order) {
      const result = await fleet.probe(target, PROBE_TIMEOUT_MS);
      if (result.ttftMs === null) mergeCounts(errors, { [`${target === direct ? 'direct' : 'proxy'} ${result.error}`]: 1 });
      else (target === direct ? viaDirect : viaProxy).push(result.ttftMs);
    }
    await sleep(PROBE_GAP_MS);
  }
  return { viaProxy, viaDirect, errors };
}

async function step(stack: ScaleStack, fleet: StreamFleet, settings: ConcurrencySettings, round: number, level: number, kind: ProxyKind) {
  const proxy = await startProxy(stack, kind, `${kind}-r${round + 1}-n${level}`, { inspect: true });
  try {
    const target = proxy.target(
      'slow',
      Math.ceil(level / settings.openPerSecond + (SETTLE_MS + PROBE_BUDGET_MS + PROBE_TIMEOUT_MS) / 1000 + HELD_MARGIN_S),
    );
    await warm(fleet, stack, settings.warmStreams, target);
    await sleep(QUIET_MS);
    const rssBefore = proxy.rssMb();
    const before = await proxy.read();
    const liveBefore = await proxy.liveHeapMb();
    const startedAt = performance.now();
    const opened = await fleet.open({
      ...target,
      count: level,
      perSecond: settings.openPerSecond,
      idleTimeoutMs: IDLE_TIMEOUT_MS,
      settleMs: SETTLE_MS,
    });
    const openMs = performance.now() - startedAt;
    await sleep(QUIET_MS);
    const rssHeld = proxy.rssMb();
    const held = await proxy.read(); // also starts the event-loop window over
    const heldOpen = (await fleet.counts()).open;
    const probes = await probeBoth(fleet, stack, proxy.target('slow', PROBE_TOKENS), settings.probes);
    const during = await proxy.read();
    // After the probes: the collections pause the proxy, which must not fall on a probe.
    const liveHeld = await proxy.liveHeapMb();
    const counts = await fleet.counts();
    const liveOpen = counts.open;
    const open = counts.open;
    const notOpen = level - open - total(opened.failed) - total(counts.broken);
    // Over the streams open when the memory was read.
    const perStream = (deltaMb: number | null) => (deltaMb !== null && heldOpen > 0 ? (deltaMb * 1024) / heldOpen : null);
    const rssDeltaMb = rssHeld - rssBefore;
    const heapDeltaMb = held.heapUsedMb !== null && before.heapUsedMb !== null ? held.heapUsedMb - before.heapUsedMb : null;
    const probeTtft = summarize(probes.viaProxy);
    const directTtft = summarize(probes.viaDirect);
    const result: ConcurrencyStep = {
      round,
      level,
      proxy: kind,
      open,
      failed: { ...opened.failed, ...(notOpen > 0 ? { 'not open when measured': notOpen } : {}) },
      lateOpen: opened.pending,
      broken: counts.broken,
      probeTtft,
      directTtft,
      probeErrors: probes.errors,
      addedTtftP50: probeTtft && directTtft ? probeTtft.p50 - directTtft.p50 : null,
      addedTtftP99: probeTtft && directTtft ? probeTtft.p99 - directTtft.p99 : null,
      rssDeltaMb,
      heapDeltaMb,
      rssPerStreamKb: perStream(rssDeltaMb),
      heapPerStreamKb: perStream(heapDeltaMb),
      liveHeapPerStreamKb: liveHeld !== null && liveBefore !== null && liveOpen > 0 ? ((liveHeld - liveBefore) * 1024) / liveOpen : null,
      lag: during.lag,
      openMs,
      ...(proxy.death() ? { died: proxy.death()! } : {}),
    };
    const errors = total(result.failed) + total(result.broken) + total(result.probeErrors);
    log(
      `  round ${round + 1} ${String(level).padStart(6)} streams ${kind.padEnd(7)} open ${open}  +TTFT p50 ${fmt(result.addedTtftP50, 2)} p99 ${fmt(result.addedTtftP99, 2)} ms` +
        `  ${fmt(result.rssPerStreamKb, 1)} KB RSS/stream  lag p99 ${fmt(result.lag?.p99, 1)} ms  errors ${errors}` +
        (errors ? ` (${JSON.stringify({ ...result.failed, ...result.broken, ...result.probeErrors })})` : '') +
        (result.died ? `\n    the proxy ${result.died}` : ''),
    );
    return result;
  } finally {
    await fleet.close().catch(() => 0);
    await proxy.stop();
    await drained(stack);
  }
}

export async function runConcurrencyPhase(
  stack: ScaleStack,
  fleet: StreamFleet,
  settings: ConcurrencySettings,
): Promise<ConcurrencyStep[]> {
  const steps: ConcurrencyStep[] = [];
  const kinds: ProxyKind[] = ['gateway', 'bare'];
  for (let round = 0; round < settings.rounds; round++) {
    for (const level of settings.levels) {
      for (const kind of round % 2 === 0 ? kinds : [...kinds].reverse()) steps.push(await step(stack, fleet, settings, round, level, kind));
    }
  }
  return steps;
}
