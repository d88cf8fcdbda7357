/**
 * The scale benchmark (issue 14): what one gateway instance and its Redis carry, each figure against
 * a baseline measured in the same run, rounds interleaved.
 *
 *   npm run bench:scale [-- --quick --phases streams,chunks,store,cluster --no-doc]
 *
 * Phases:
 *   streams  1 000 / 5 000 / 10 000 streams at 1 token/s held open through one gateway (Redis store)
 *            and through the bare Node proxy, each step on a fresh process: added TTFT of probe
 *            streams (against the simulator direct, at the same moment), RSS and heap per stream,
 *            the proxy's event-loop delay, every failure by cause (scale/concurrency-phase.ts);
 *   chunks   streams at 20 tokens/s: the proxy's CPU per chunk, and the streams one core carries
 *            (scale/chunk-phase.ts);
 *   store    acquire at 3 / 10 / 30 / 100 deployments and the renewal stall at 5 k / 20 k leases,
 *            the store against its previous design (scale/store-cost.ts, scale/store-phase.ts);
 *   cluster  6 pools on one Redis and on a 3-master Redis Cluster: acquire+release pairs/s from store
 *            clients in child processes, with each redis-server's CPU (scale/cluster-phase.ts).
 *
 * Stream load comes from several worker processes (scale/stream-worker.ts): one process holds only
 * so many sockets under the open-file limit. Writes loadtest/results/scale-<date>.json and (unless
 * --no-doc) the generated section of docs/benchmarks.md and docs/scale.svg (scale/report.ts).
 */
import { cpus, loadavg } from 'node:os';
import { ProcessSet } from '../shared/processes/process-set.ts';
import { cpuModel, gitRevision } from './lib/report-doc.ts';
import { runChunkPhase } from './scale/chunk-phase.ts';
import { runClusterPhase } from './scale/cluster-phase.ts';
import { runConcurrencyPhase } from './scale/concurrency-phase.ts';
import { hardCapMs, parseOptions } from './scale/options.ts';
import { openFileLimit, printReport, writeDocs, writeResult, type ScaleReport } from './scale/report.ts';
import { startScaleStack } from './scale/stack.ts';
import { runStorePhase } from './scale/store-phase.ts';
import { startStreamFleet } from './scale/stream-fleet.ts';
import { summarizeScale } from './scale/figures.ts';

const t0 = performance.now();
/** Each phase's line carries the time into the run, so that a slow phase shows. */
const log = (line: string) => process.stdout.write(`${line}\n`);
const phase = (line: string) => log(`[${((performance.now() - t0) / 1000).toFixed(1)} s] ${line}`);

async function main(): Promise<number> {
  const options = parseOptions();
  if (typeof options === 'number') return options;
  const processes = new ProcessSet();
  processes.capRunTime(hardCapMs(options));
  const startedAt = new Date();
  const report: ScaleReport = {
    options,
    startedAt: startedAt.toISOString(),
    revision: gitRevision(),
    machine: { cores: cpus().length, cpu: cpuModel(), node: process.version, loadBefore: loadavg(), openFiles: openFileLimit() },
    streams: [],
    chunks: [],
    store: null,
    cluster: null,
    figures: null,
    durationMs: 0,
  };
  log(
    `bench:scale: phases ${options.phases.join(', ')}${options.quick ? ' (quick)' : ''}; ${report.machine.cores} cores, ${report.machine.cpu}, node ${process.version}`,
  );
  try {
    if (options.phases.includes('streams') || options.phases.includes('chunks')) {
      const stack = await startScaleStack(processes);
      const fleet = await startStreamFleet(processes, options.workers);
      if (options.phases.includes('streams')) {
        phase(`streams at 1 token/s: ${options.levels.join(' / ')}, ${options.rounds} round(s)`);
        report.streams = await runConcurrencyPhase(stack, fleet, {
          levels: options.levels,
          rounds: options.rounds,
          openPerSecond: options.openPerSecond,
          probes: options.probes,
          warmStreams: Math.min(200, Math.max(...options.levels)),
        });
      }
      if (options.phases.includes('chunks')) {
        phase(
          `streams at 20 tokens/s: ${options.chunkStreams} streams, ${options.chunkRounds} round(s) of ${options.chunkWindowMs / 1000} s`,
        );
        report.chunks = await runChunkPhase(stack, fleet, {
          streams: options.chunkStreams,
          rounds: options.chunkRounds,
          windowMs: options.chunkWindowMs,
          openPerSecond: options.openPerSecond,
        });
      }
    }
    if (options.phases.includes('store')) {
      phase('store: acquire by deployments, renewal stall by leases (new design against the previous one)');
      report.store = await runStorePhase(processes, options);
    }
    if (options.phases.includes('cluster')) {
      phase(`cluster: 6 pools, one Redis against a 3-master cluster, ${options.clusterClients.join(' / ')} store client process(es)`);
      report.cluster = await runClusterPhase(processes, options);
    }
    report.figures = summarizeScale(report);
    report.durationMs = Date.now() - startedAt.getTime();
    printReport(report);
    const written = writeResult(report);
    if (!options.noDoc) writeDocs(report, written);
    return 0;
  } finally {
    await processes.stopAll();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench:scale: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(2);
  },
);
