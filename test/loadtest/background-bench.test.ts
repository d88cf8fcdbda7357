/**
 * The background benchmark (loadtest/background-bench.ts, `npm run bench:background`): one short round
 * through the benchmark itself (small budgets, a 250-line batch, 3 s windows). It asserts the
 * benchmark's accounting, not the lane's behaviour: the tap sees what the simulator counts, tells batch
 * lines from interactive calls, and the figures follow from them. Whether the checks pass is the
 * lane's business (exit 0 or 99).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ProcessSet } from '../../shared/processes/process-set.ts';
import type { PhaseReport } from '../../loadtest/background/analysis.ts';
import type { Costs, Settings } from '../../loadtest/background/settings.ts';
import { REPO_ROOT } from '../../loadtest/lib/stack.ts';

/** The run below takes about 25 s: the stack's start, the warm-up, 2 phases of a few windows, the stop. */
const RUN_TIMEOUT_MS = 38_000;
const LINES = 250;

interface Result {
  settings: Settings;
  costs: Costs;
  batchSkipped: string | null;
  reports: PhaseReport[];
}

const near = (actual: number, expected: number, share: number) => Math.abs(actual - expected) <= share * expected;

describe('background benchmark, one short round', { timeout: RUN_TIMEOUT_MS + 5000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'spillway-background-bench-test-'));
  const processes = new ProcessSet();
  let code: number | null = null;
  let output = '';
  let result: Result | undefined;

  before(async () => {
    const out = join(dir, 'out.json');
    const args = [
      'loadtest/background-bench.ts',
      ...['--rounds', '1', '--window-ms', '3000', '--tpm', '50000', '--per-token-ms', '0.05', '--lines', String(LINES)],
      ...['--alone-windows', '2', '--batch-cap-s', '15', '--no-doc', '--results-dir', dir, '--json', out],
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
      result = JSON.parse(readFileSync(out, 'utf8')) as Result;
    } catch {
      // asserted below, with the output
    }
  });
  after(async () => {
    await processes.stopAll(2000);
    rmSync(dir, { recursive: true, force: true });
  });

  const phase = (kind: string) => result?.reports.find((r) => r.kind === kind);

  test('the run ends with a verdict and writes its figures', () => {
    // 0: every check passed; 99: one failed (the lane's business, not this test's).
    assert.ok(code === 0 || code === 99, `bench exited with ${code}:\n${output.slice(-3000)}`);
    assert.ok(result, `no JSON written:\n${output.slice(-3000)}`);
    assert.match(output, /added p50 ms \(gateway − simulator\)/);
  });

  test('alone: the tap sees what the simulator counts, all of it interactive, at the planned load', () => {
    const alone = phase('alone');
    assert.ok(alone && result, 'the phase alone ran');
    const measuredS = alone.measuredMs / 1000;
    assert.ok(near(alone.requests, result.costs.interactiveRps * measuredS, 0.05), `${alone.requests} requests in ${measuredS} s`);
    assert.equal(alone.background.calls, 0, 'no batch line upstream');
    assert.ok(alone.interactive.calls >= alone.succeeded, 'every 200 was one upstream call at least');
    // Calls in flight at the measured part's edges are the only difference; tokens count at the answer's end.
    assert.ok(Math.abs(alone.tapMinusSimulator.calls) <= 0.03 * alone.interactive.calls, JSON.stringify(alone.tapMinusSimulator));
    assert.ok(Math.abs(alone.tapMinusSimulator.tokens) <= 0.03 * alone.interactive.tokens, JSON.stringify(alone.tapMinusSimulator));
    assert.ok(near(alone.utilisation, result.settings.load, 0.1), `utilisation ${alone.utilisation}`);
    assert.ok(near(alone.interactiveShare, alone.utilisation, 0.03), 'the tap’s interactive tokens are the simulator’s');
    assert.ok(
      alone.addedMatched >= 0.95 * alone.succeeded,
      `${alone.addedMatched} of ${alone.succeeded} 200s matched to their upstream calls`,
    );
    const added = alone.addedLatency;
    assert.ok(added && added.p50 > 0 && added.p50 < (alone.latency200?.p50 ?? 0), 'the added latency is a part of the latency');
  });

  test('with the batch: every line upstream as a batch call, the batch against its ideal', () => {
    assert.equal(result?.batchSkipped, null, `the phase with the batch ran (${result?.batchSkipped})`);
    const withBatch = phase('batch');
    assert.ok(withBatch?.batch && result, 'the phase with the batch has batch figures');
    const batch = withBatch.batch;
    assert.equal(batch.lines, LINES);
    assert.ok(withBatch.background.served >= batch.completed, 'each completed line was a served batch call');
    assert.ok(withBatch.background.calls > 0 && withBatch.background.calls >= withBatch.background.served);
    assert.ok(near(batch.tokensPerLine, result.costs.line.usage, 0.05), `tokens per line ${batch.tokensPerLine}`);
    assert.ok(withBatch.backgroundShare > 0 && near(withBatch.utilisation, withBatch.interactiveShare + withBatch.backgroundShare, 0.05));
    const interactivePerSecond = (withBatch.interactive.tokens * 1000) / withBatch.measuredMs;
    const idle = (1 - result.settings.reserve) * result.costs.capacityTokensPerSecond - interactivePerSecond;
    assert.ok(near(batch.idleTokensPerSecond, idle, 0.001));
    assert.ok(near(batch.idealSeconds, (LINES * batch.tokensPerLine) / idle, 0.001));
    if (batch.status === 'completed') {
      assert.ok(batch.seconds !== undefined && batch.seconds > 0 && batch.seconds * 1000 <= withBatch.measuredMs + 1000);
      assert.equal(batch.output?.missing, 0, 'the output check read every custom_id');
    }
  });
});
