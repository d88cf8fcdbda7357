/**
 * The window the gateway books against is 2 % longer than the deployments' own (rounded to whole
 * buckets). A request is booked when the gateway admits it and by Azure when it arrives, a moment
 * later, possibly in Azure's next bucket; with exactly the same window the gateway would see the
 * budget free up to one bucket before Azure does and admit into a 429. A 2 % longer window leaves
 * the booking in our window a little longer than in Azure's (by 2 % less one bucket: 180 ms on a
 * minute), at the price of using at most 98 % of the budget.
 */
import { WINDOW_BUCKETS } from '../../shared/store/constants.ts';

const WINDOW_MARGIN = 1.02;

export function admissionWindowMs(deploymentWindowMs: number): number {
  return Math.ceil((deploymentWindowMs * WINDOW_MARGIN) / WINDOW_BUCKETS) * WINDOW_BUCKETS;
}
