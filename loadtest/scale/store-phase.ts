/**
 * Phase 3 of the scale bench: the store's own cost, the new design against the previous one side by
 * side: acquire at 3 / 10 / 30 / 100 deployments and the renewal stall at 5 k / 20 k leases. The
 * measurement is scale/store-cost.ts's (`measureStoreCost`, its own private redis-server); this phase
 * gives it the bench's size.
 */
import { measureStoreCost, type StoreCostResult } from './store-cost.ts';
import type { ProcessSet } from '../../shared/processes/process-set.ts';
import type { ScaleOptions } from './options.ts';

export const ACQUIRE_DEPLOYMENTS = [3, 10, 30, 100];
export const RENEWAL_LEASES = [5000, 20_000];

export type StorePhaseResult = { skipped: string } | { measured: StoreCostResult };

const log = (line: string) => process.stdout.write(`  ${line}\n`);

/** The measurement, or why there is none: a failure of this phase is reported, and the other phases still run. */
export async function runStorePhase(processes: ProcessSet, options: ScaleOptions): Promise<StorePhaseResult> {
  try {
    const measured = await measureStoreCost({
      rounds: options.quick ? 2 : 3,
      pairs: options.quick ? 150 : 300,
      deployments: ACQUIRE_DEPLOYMENTS,
      leases: RENEWAL_LEASES,
      log,
      processes,
    });
    return { measured };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    log(`store cost failed: ${message}`);
    return { skipped: `measureStoreCost failed: ${message}` };
  }
}
