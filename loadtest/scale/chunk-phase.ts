/**
 * Phase 2 of the scale bench: streams at 20 tokens/s through the gateway and through the bare Node
 * proxy in turn (the order rotated every round). With every stream open and flowing, a window of
 * the proxy's CPU (/proc/<pid>/stat) against the SSE events the clients received meanwhile: CPU per
 * chunk, with no stream starting or ending inside it. Streams per core follow: one core's time over
 * a stream's 20 chunks a second.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { cpuMs } from '../../shared/processes/proc-stats.ts';
import { fmt } from '../lib/format.ts';
import type { StreamFleet } from './stream-fleet.ts';
import type { ErrorCounts } from './stream-protocol.ts';
import { PACES, startProxy, type Proxy, type ProxyKind, type ScaleStack } from './stack.ts';

export interface ChunkSettings {
  streams: number;
  rounds: number;
  windowMs: number;
  openPerSecond: number;
}

export interface ChunkStep {
  round: number;
  proxy: ProxyKind;
  open: number;
  failed: ErrorCounts;
  broken: ErrorCounts;
  events: number;
  cpuMs: number;
  windowMs: number;
  cpuPerChunkUs: number | null;
}

export const CHUNKS_PER_SECOND = 1000 / PACES.fast;
const log = (line: string) => process.stdout.write(`${line}\n`);
/** Time for every stream to flow at its pace before the window starts. */
const SETTLE_MS = 1000;
const IDLE_TIMEOUT_MS = 30_000;

/** Enough tokens to outlast the opening, the settle and the window. */
const tokensFor = (settings: ChunkSettings) =>
  Math.ceil(((settings.streams / settings.openPerSecond) * 1000 + SETTLE_MS + settings.windowMs + 5000) / PACES.fast);

async function window(fleet: StreamFleet, proxy: Proxy, settings: ChunkSettings, round: number): Promise<ChunkStep> {
  const opened = await fleet.open({
    ...proxy.target('fast', tokensFor(settings)),
    count: settings.streams,
    perSecond: settings.openPerSecond,
    idleTimeoutMs: IDLE_TIMEOUT_MS,
    settleMs: 5000,
  });
  try {
    // Short windows (the test's) settle as briefly.
    await sleep(Math.min(SETTLE_MS, settings.windowMs));
    const before = { cpu: cpuMs(proxy.pid), events: (await fleet.counts()).events, at: performance.now() };
    await sleep(settings.windowMs);
    const after = { cpu: cpuMs(proxy.pid), counts: await fleet.counts(), at: performance.now() };
    const events = after.counts.events - before.events;
    const cpu = after.cpu - before.cpu;
    return {
      round,
      proxy: proxy.kind,
      open: after.counts.open,
      failed: { ...opened.failed, ...(opened.pending ? { 'no first token in 5 s': opened.pending } : {}) },
      broken: after.counts.broken,
      events,
      cpuMs: cpu,
      windowMs: after.at - before.at,
      cpuPerChunkUs: events > 0 ? (cpu * 1000) / events : null,
    };
  } finally {
    await fleet.close();
  }
}

export async function runChunkPhase(stack: ScaleStack, fleet: StreamFleet, settings: ChunkSettings): Promise<ChunkStep[]> {
  const proxies = { gateway: await startProxy(stack, 'gateway', 'gateway-chunks'), bare: await startProxy(stack, 'bare', 'bare-chunks') };
  const steps: ChunkStep[] = [];
  try {
    // Warm-up of each (JIT, connection handling), not recorded.
    for (const proxy of Object.values(proxies)) await window(fleet, proxy, { ...settings, windowMs: Math.min(500, settings.windowMs) }, -1);
    for (let round = 0; round < settings.rounds; round++) {
      const order: ProxyKind[] = round % 2 === 0 ? ['gateway', 'bare'] : ['bare', 'gateway'];
      for (const kind of order) {
        const result = await window(fleet, proxies[kind], settings, round);
        steps.push(result);
        log(
          `  round ${round + 1} ${settings.streams} streams at ${CHUNKS_PER_SECOND}/s ${kind.padEnd(7)} ${fmt(result.cpuPerChunkUs, 1)} µs CPU/chunk` +
            `  (${result.events} chunks, ${fmt(result.cpuMs, 0)} ms CPU in ${fmt(result.windowMs / 1000, 1)} s)  open ${result.open}`,
        );
      }
    }
  } finally {
    await Promise.all(Object.values(proxies).map((p) => p.stop()));
  }
  return steps;
}
