/**
 * The bench's CPU verdicts (loadtest/bench/figures.ts): each gateway against the bare Node proxy,
 * pooled and round by round, and the stack floor between them. From rows as the bench builds them.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { verdictsOf, type Row } from '../../loadtest/bench/figures.ts';
import { LABELS, type BenchOptions, type TargetKey } from '../../loadtest/bench/options.ts';

/** A row with only what the CPU verdicts read: pooled and per-round CPU per request. */
function row(key: TargetKey, pooled: number, byRound: number[]): Row {
  return { key, label: LABELS[key], gatewayUsPerRequestClosed: pooled, gatewayUsPerRequestClosedByRound: byRound } as Row;
}

const options = { rate: 200 } as BenchOptions;
const cpuVerdicts = (rows: Row[]) => verdictsOf(rows, options).filter((v) => v.goal.includes('CPU per request'));

describe('bench CPU verdicts', () => {
  test('a gateway passes at 2× the bare proxy and fails above it; each round is read against its own round', () => {
    const verdicts = cpuVerdicts([row('node-proxy', 100, [80, 120]), row('gw1-mem', 200, [176, 216]), row('gw1-redis', 201, [200, 204])]);
    assert.deepEqual(
      verdicts.map((v) => [v.goal, v.result]),
      [
        ["1 gateway, memory store: CPU per request ≤ 2× the bare Node proxy's (closed loop)", 'PASS'],
        ["1 gateway, Redis: CPU per request ≤ 2× the bare Node proxy's (closed loop)", 'FAIL'],
      ],
    );
    // 176 / 80 and 216 / 120: the rounds' own ratios, not each against the pooled figure.
    assert.equal(verdicts[0]!.measured, '200 vs 100 µs (×2.00; by round ×1.80–2.20)');
    assert.equal(verdicts[1]!.measured, '201 vs 100 µs (×2.01; by round ×1.70–2.50)');
  });

  test('the stack floor is reported against the bare proxy, and each gateway against the floor', () => {
    const verdicts = cpuVerdicts([row('node-proxy', 100, [100]), row('stack-floor', 130, [130]), row('gw1-redis', 260, [260])]);
    assert.equal(verdicts.length, 2);
    assert.equal(verdicts[0]!.result, 'info');
    // One round: no range to show.
    assert.equal(verdicts[0]!.measured, '130 vs 100 µs (×1.30)');
    assert.equal(verdicts[1]!.measured, "260 vs 100 µs (×2.60); ×2.00 the stack floor's");
    assert.equal(verdicts[1]!.result, 'FAIL');
  });

  test('without the bare proxy among the targets there is nothing to judge against', () => {
    assert.deepEqual(cpuVerdicts([row('stack-floor', 130, [130]), row('gw1-redis', 150, [150])]), []);
  });
});
