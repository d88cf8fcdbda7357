/**
 * Injected faults: their schema (shared by setFault, the control API and the CLI config) and the
 * per-deployment slot that hands the active fault to the next request(s).
 */
import { z } from 'zod';
import type { Fault, FaultSpec } from './types.ts';

const nonNegativeMs = z.number().int().min(0);

export const faultSchema = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('status'),
    status: z.union([z.literal(500), z.literal(502), z.literal(503), z.literal(504), z.literal(408), z.literal(429)]),
    retryAfterMs: nonNegativeMs.optional(),
  }),
  z.strictObject({ kind: z.literal('reset') }),
  z.strictObject({ kind: z.literal('hang') }),
  z.strictObject({ kind: z.literal('slow-first-byte'), delayMs: nonNegativeMs }),
  z.strictObject({ kind: z.literal('stall-mid-stream'), afterChunks: z.number().int().min(0), stallMs: nonNegativeMs.optional() }),
  z.strictObject({ kind: z.literal('reset-mid-stream'), afterChunks: z.number().int().min(0) }),
  z.strictObject({ kind: z.literal('storm-429'), retryAfterMs: nonNegativeMs }),
]);

export const faultSpecSchema = z.strictObject({
  fault: faultSchema,
  count: z.number().int().min(1).optional(),
});

/** The fault of one deployment, with how many more requests it applies to. */
export class FaultSlot {
  private fault: Fault | null = null;
  /** Requests left; Infinity when the fault stays until cleared. */
  private remaining = 0;

  set(spec: FaultSpec | null): void {
    if (spec === null) {
      this.fault = null;
      this.remaining = 0;
      return;
    }
    const parsed = faultSpecSchema.parse(spec);
    this.fault = parsed.fault as Fault;
    this.remaining = parsed.count ?? Infinity;
  }

  /** The fault for the request arriving now (consuming one use), or null. */
  take(): Fault | null {
    const fault = this.fault;
    if (fault === null) return null;
    this.remaining--;
    if (this.remaining <= 0) this.fault = null;
    return fault;
  }

  /** The installed fault without consuming it. */
  peek(): Fault | null {
    return this.fault;
  }
}
