/**
 * The store phase's tables (scale/store-cost.ts's figures): Redis time per acquire by pool size and
 * the renewal stall by leases, the current store beside the previous design, against issue 14's
 * targets (acquire ≤ 150 µs at 30 deployments and ≤ 250 µs at 100; renewal never holds Redis
 * longer than 2 ms at 20 000 leases).
 */
import { fmt } from '../lib/format.ts';
import type { SideBySide, StoreCostResult } from './store-cost.ts';
import type { StorePhaseResult } from './store-phase.ts';

export interface TitledTable {
  title: string;
  intro?: string;
  header: string[];
  rows: string[][];
}

const ACQUIRE_TARGET_US: Record<number, number> = { 30: 150, 100: 250 };
const RENEWAL_TARGET_US = 2000;
const RENEWAL_TARGET_LEASES = 20_000;

/** "now / before (×ratio)". */
function pair(figure: SideBySide, digits = 0): string {
  return `${fmt(figure.current, digits)} / ${fmt(figure.previous, digits)} (×${fmt(figure.ratio, 1)})`;
}

function verdict(value: number, target: number | undefined): string {
  if (target === undefined) return '–';
  return `${value <= target ? 'met' : 'missed'} (≤ ${target})`;
}

function tables(measured: StoreCostResult): TitledTable[] {
  const intro =
    `The current store against the previous design (the store at commit ${measured.baselineCommit}), ${measured.rounds} interleaved rounds, ` +
    `Redis ${measured.redisVersion} on its own private server (scale/store-cost.ts). Each cell: now / before (× before ÷ now).`;
  return [
    {
      title: 'Store cost: acquire by deployments per pool',
      intro:
        `${intro} Redis time per call from SLOWLOG (every call logged), in acquire + release pairs with tpm and rpm budgets; ` +
        'client CPU: the calling process per pair (command building, reply parsing).',
      header: [
        'deployments',
        'acquire µs, mean',
        'acquire µs, median',
        'release µs, mean',
        'client CPU µs per pair',
        'target (median, now)',
      ],
      rows: measured.acquire.map((row) => [
        String(row.deployments),
        pair(row.acquireUs),
        pair(row.acquireMedianUs),
        pair(row.releaseUs),
        pair(row.clientCpuUsPerPair),
        verdict(row.acquireMedianUs.current, ACQUIRE_TARGET_US[row.deployments]),
      ]),
    },
    {
      title: 'Store cost: lease renewal by leases',
      intro:
        "One renewal round of one pool's leases (10 deployments): the longest single command Redis ran for it (how long other " +
        'instances wait behind it at worst), the Redis time of the whole round, its commands, and the worst PING another ' +
        'connection saw meanwhile.',
      header: ['leases', 'longest command µs', 'total Redis µs', 'commands', 'worst other client ms', 'target (longest, now)'],
      rows: measured.renewal.map((row) => [
        String(row.leases),
        pair(row.longestCommandUs),
        pair(row.totalRedisUs),
        `${fmt(row.commands.current, 0)} / ${fmt(row.commands.previous, 0)}`,
        pair(row.worstOtherClientMs, 1),
        verdict(row.longestCommandUs.current, row.leases === RENEWAL_TARGET_LEASES ? RENEWAL_TARGET_US : undefined),
      ]),
    },
  ];
}

export function storeCostTables(store: StorePhaseResult | null): TitledTable[] {
  if (!store || !('measured' in store)) return [];
  return tables(store.measured);
}
