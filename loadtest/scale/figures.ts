/**
 * The scale bench's figures from its steps: medians over the rounds, each beside its baseline of the
 * same rounds (the gateway beside the bare Node proxy, the cluster beside one Redis), and the range
 * over the rounds so that the noise shows.
 */
import { CHUNKS_PER_SECOND, type ChunkStep } from './chunk-phase.ts';
import type { ClusterResult, Topology } from './cluster-phase.ts';
import type { ConcurrencyStep } from './concurrency-phase.ts';
import type { ErrorCounts } from './stream-protocol.ts';
import type { ProxyKind } from './stack.ts';

export interface Range {
  median: number | null;
  min: number | null;
  max: number | null;
}

export interface StreamFigures {
  level: number;
  proxy: ProxyKind;
  /** Fewest streams open over the rounds. */
  open: number;
  addedTtftP50: Range;
  addedTtftP99: Range;
  rssPerStreamKb: Range;
  heapPerStreamKb: Range;
  liveHeapPerStreamKb: Range;
  lagP50: Range;
  lagP99: Range;
  lagMax: Range;
  /** Most streams of a round with no first token within the open's settle time (most opened later). */
  lateOpen: number;
  /** Every failure of every round, by cause. */
  errors: ErrorCounts;
  errorCount: number;
}

export interface ChunkFigures {
  proxy: ProxyKind;
  cpuPerChunkUs: Range;
  /** One core's time over a stream's chunks per second. */
  streamsPerCore: number | null;
  errorCount: number;
}

export interface ClusterFigures {
  topology: Topology;
  clients: number;
  pairsPerSecond: Range;
  busiestRedisCores: Range;
  /** Median cores of each redis-server, by port. */
  redisCores: Record<string, number>;
  clientCores: Range;
  machineCores: Range;
  /** Redis CPU of all its servers per pair, µs: what a pair costs Redis, whatever the machine left it. */
  redisUsPerPair: Range;
  /** Pairs/s scaled to the busiest redis-server at 100 % of a core: an extrapolation, labelled as one. */
  pairsAtBusiestCore: Range;
  errorCount: number;
}

export interface ScaleFigures {
  streams: StreamFigures[];
  chunks: ChunkFigures[];
  /** Gateway ÷ bare proxy, median CPU per chunk. */
  chunkRatio: number | null;
  cluster: ClusterFigures[];
}

/** The middle value, or the mean of the two middle ones (2 rounds give their mean, not the lower). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function rangeOf(values: (number | null | undefined)[]): Range {
  const present = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  if (present.length === 0) return { median: null, min: null, max: null };
  return { median: median(present), min: Math.min(...present), max: Math.max(...present) };
}

const countOf = (counts: ErrorCounts) => Object.values(counts).reduce((a, b) => a + b, 0);

function mergeAll(list: ErrorCounts[]): ErrorCounts {
  const merged: ErrorCounts = {};
  for (const counts of list) for (const [cause, n] of Object.entries(counts)) merged[cause] = (merged[cause] ?? 0) + n;
  return merged;
}

function streamFigures(steps: ConcurrencyStep[]): StreamFigures[] {
  const levels = [...new Set(steps.map((s) => s.level))];
  return levels.flatMap((level) =>
    (['gateway', 'bare'] as const).flatMap((proxy) => {
      const mine = steps.filter((s) => s.level === level && s.proxy === proxy);
      if (mine.length === 0) return [];
      // Failures before the first token, while held, and of the probes: each says why.
      const errors = mergeAll(mine.flatMap((s) => [s.failed, s.broken, s.probeErrors]));
      return [
        {
          level,
          proxy,
          open: Math.min(...mine.map((s) => s.open)),
          lateOpen: Math.max(...mine.map((s) => s.lateOpen ?? 0)),
          addedTtftP50: rangeOf(mine.map((s) => s.addedTtftP50)),
          addedTtftP99: rangeOf(mine.map((s) => s.addedTtftP99)),
          rssPerStreamKb: rangeOf(mine.map((s) => s.rssPerStreamKb)),
          heapPerStreamKb: rangeOf(mine.map((s) => s.heapPerStreamKb)),
          liveHeapPerStreamKb: rangeOf(mine.map((s) => s.liveHeapPerStreamKb)),
          lagP50: rangeOf(mine.map((s) => s.lag?.p50)),
          lagP99: rangeOf(mine.map((s) => s.lag?.p99)),
          lagMax: rangeOf(mine.map((s) => s.lag?.max)),
          errors,
          errorCount: countOf(errors),
        },
      ];
    }),
  );
}

function chunkFigures(steps: ChunkStep[]): ChunkFigures[] {
  return (['gateway', 'bare'] as const).flatMap((proxy) => {
    const mine = steps.filter((s) => s.proxy === proxy);
    if (mine.length === 0) return [];
    const cpuPerChunkUs = rangeOf(mine.map((s) => s.cpuPerChunkUs));
    return [
      {
        proxy,
        cpuPerChunkUs,
        streamsPerCore: cpuPerChunkUs.median ? 1e6 / (cpuPerChunkUs.median * CHUNKS_PER_SECOND) : null,
        errorCount: countOf(mergeAll(mine.flatMap((s) => [s.failed, s.broken]))),
      },
    ];
  });
}

function clusterFigures(result: ClusterResult | null): ClusterFigures[] {
  if (!result) return [];
  const keys = [...new Set(result.steps.map((s) => `${s.topology} ${s.clients}`))];
  return keys.map((key) => {
    const mine = result.steps.filter((s) => `${s.topology} ${s.clients}` === key);
    const ports = Object.keys(mine[0]!.redisCores);
    return {
      topology: mine[0]!.topology,
      clients: mine[0]!.clients,
      pairsPerSecond: rangeOf(mine.map((s) => s.pairsPerSecond)),
      busiestRedisCores: rangeOf(mine.map((s) => s.busiestRedisCores)),
      redisCores: Object.fromEntries(ports.map((port) => [port, median(mine.map((s) => s.redisCores[port] ?? 0))])),
      clientCores: rangeOf(mine.map((s) => s.clientCores)),
      machineCores: rangeOf(mine.map((s) => s.machineCores)),
      redisUsPerPair: rangeOf(
        mine.map((s) => (s.pairsPerSecond > 0 ? (Object.values(s.redisCores).reduce((a, b) => a + b, 0) * 1e6) / s.pairsPerSecond : null)),
      ),
      pairsAtBusiestCore: rangeOf(mine.map((s) => (s.busiestRedisCores > 0 ? s.pairsPerSecond / s.busiestRedisCores : null))),
      errorCount: mine.reduce((acc, s) => acc + s.errors, 0),
    };
  });
}

export function summarizeScale(report: { streams: ConcurrencyStep[]; chunks: ChunkStep[]; cluster: ClusterResult | null }): ScaleFigures {
  const chunks = chunkFigures(report.chunks);
  const gateway = chunks.find((c) => c.proxy === 'gateway')?.cpuPerChunkUs.median;
  const bare = chunks.find((c) => c.proxy === 'bare')?.cpuPerChunkUs.median;
  return {
    streams: streamFigures(report.streams),
    chunks,
    chunkRatio: gateway && bare ? gateway / bare : null,
    cluster: clusterFigures(report.cluster),
  };
}
