/**
 * The scale benchmark (loadtest/scale-bench.ts, `npm run bench:scale`) in a tiny bounded run: 20
 * streams, 2 rounds, the stream, chunk and cluster phases (the store phase is store-cost.ts's, tested
 * with it), no doc written. It asserts the result's shape and that nothing failed, so that the bench
 * cannot rot: every step of every phase ran against both of its sides, the figures are numbers.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ProcessSet } from '../../shared/processes/process-set.ts';
import type { ScaleReport } from '../../loadtest/scale/report.ts';
import { REPO_ROOT } from '../../loadtest/lib/stack.ts';

/** The run below takes about 20 s: stack, 4 stream steps on fresh proxies, 4 chunk windows, 2 cluster steps. */
const RUN_TIMEOUT_MS = 45_000;
const STREAMS = 20;
const PROBES = 3;

const errorsOf = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);
const svgTime = () => (existsSync(join(REPO_ROOT, 'docs', 'scale.svg')) ? statSync(join(REPO_ROOT, 'docs', 'scale.svg')).mtimeMs : 0);

describe('scale benchmark, a tiny run', { timeout: RUN_TIMEOUT_MS + 10_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'spillway-scale-bench-test-'));
  const processes = new ProcessSet();
  const svgBefore = svgTime();
  let code: number | null = null;
  let output = '';
  let report: ScaleReport | undefined;

  before(async () => {
    const out = join(dir, 'out.json');
    const args = [
      'loadtest/scale-bench.ts',
      ...['--quick', '--phases', 'streams,chunks,cluster', '--rounds', '2', '--levels', String(STREAMS), '--probes', String(PROBES)],
      ...['--chunk-streams', String(STREAMS), '--chunk-window', '300', '--cluster-step', '400', '--cluster-clients', '1', '--workers', '2'],
      ...['--no-doc', '--results-dir', dir, '--json', out],
    ];
    const bench = processes.spawn('bench', process.execPath, args, { cwd: REPO_ROOT });
    bench.process.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    bench.process.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => bench.process.kill('SIGTERM'), RUN_TIMEOUT_MS);
      bench.process.once('exit', (exitCode) => {
        clearTimeout(timer);
        resolve(exitCode);
      });
    });
    try {
      report = JSON.parse(readFileSync(out, 'utf8')) as ScaleReport;
    } catch {
      // asserted below, with the output
    }
  });

  after(async () => {
    await processes.stopAll();
    rmSync(dir, { recursive: true, force: true });
  });

  test('it ends with 0, writes its JSON, and leaves the docs alone', () => {
    assert.equal(code, 0, output);
    assert.ok(report, `no JSON written:\n${output}`);
    assert.equal(svgTime(), svgBefore, '--no-doc wrote docs/scale.svg');
  });

  test('streams at 1 token/s: every round has both proxies, every stream open, every probe answered, no error', () => {
    const steps = report!.streams;
    assert.equal(steps.length, 4, output);
    for (const round of [0, 1]) {
      assert.deepEqual(
        steps
          .filter((s) => s.round === round)
          .map((s) => s.proxy)
          .sort(),
        ['bare', 'gateway'],
      );
    }
    for (const step of steps) {
      assert.equal(step.open, STREAMS, JSON.stringify(step));
      assert.equal(errorsOf(step.failed) + errorsOf(step.broken) + errorsOf(step.probeErrors), 0, JSON.stringify(step));
      assert.equal(step.probeTtft?.count, PROBES);
      assert.equal(step.directTtft?.count, PROBES);
      assert.ok(Number.isFinite(step.addedTtftP50) && Number.isFinite(step.rssPerStreamKb), JSON.stringify(step));
      assert.ok(step.lag && step.lag.max >= step.lag.p50, `no event-loop reading: ${JSON.stringify(step)}`);
    }
    const figures = report!.figures!.streams;
    assert.deepEqual(
      figures.map((f) => [f.level, f.proxy, f.errorCount]),
      [
        [STREAMS, 'gateway', 0],
        [STREAMS, 'bare', 0],
      ],
    );
  });

  test('streams at 20 tokens/s: chunks counted against CPU for both proxies', () => {
    const steps = report!.chunks;
    assert.equal(steps.length, 4, output);
    for (const step of steps) {
      // 20 streams at 20 chunks/s over the window as it lasted (about 0.3 s: 120 events), give or take the timers' noise.
      const expected = (STREAMS * 20 * step.windowMs) / 1000;
      assert.ok(step.events >= expected * 0.5 && step.events <= expected * 1.5, JSON.stringify(step));
      assert.equal(step.open, STREAMS);
      assert.equal(errorsOf(step.failed) + errorsOf(step.broken), 0, JSON.stringify(step));
      assert.ok(step.cpuPerChunkUs !== null && step.cpuPerChunkUs >= 0);
    }
    assert.deepEqual(
      report!.figures!.chunks.map((c) => c.proxy),
      ['gateway', 'bare'],
    );
  });

  test('cluster: one Redis and a 3-master cluster, pairs done, each redis-server measured, no error', () => {
    const cluster = report!.cluster!;
    assert.equal(cluster.pools.length, 6);
    // 2 pools on each master.
    const perMaster = new Map<number, number>();
    for (const pool of cluster.pools) perMaster.set(pool.port.cluster, (perMaster.get(pool.port.cluster) ?? 0) + 1);
    assert.deepEqual([...perMaster.values()], [2, 2, 2]);
    assert.deepEqual(cluster.steps.map((s) => s.topology).sort(), ['cluster', 'single']);
    for (const step of cluster.steps) {
      assert.equal(step.errors, 0, step.firstError);
      assert.ok(step.pairsPerSecond > 0);
      assert.equal(Object.keys(step.redisCores).length, step.topology === 'cluster' ? 3 : 1);
    }
  });
});
