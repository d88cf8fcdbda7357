/**
 * Writes a response on the latency model's schedule: headers and the first tick at firstTickMs,
 * one tick per tickIntervalMs after that. Mid-stream faults cut the response after a number of
 * pieces (SSE events, or halves of a JSON body) and either stall or drop the connection.
 * With no delay and no fault the whole response goes out in one write.
 */
import type { ServerResponse } from 'node:http';

export type Cut =
  /** Stop after `afterPieces` pieces; resume after stallMs, or never (until the client leaves). */
  | { afterPieces: number; action: 'stall'; stallMs?: number }
  /** Close the connection after `afterPieces` pieces have been flushed. */
  | { afterPieces: number; action: 'reset' };

export interface DeliveryPlan {
  status: number;
  /** Flat [name, value, name, value, ...] pairs, as writeHead accepts them. */
  headers: string[];
  pieces: string[];
  /** tickEnds[k] = index one past the last piece of tick k; the last entry is pieces.length. */
  tickEnds: number[];
  /** When tick 0 (and the headers) are due, in ms after deliver() is called. */
  firstTickMs: number;
  tickIntervalMs: number;
  cut: Cut | null;
}

/** Called when the plan's cut closes the connection on purpose (so it is not an abort). */
export type OnDeliberateReset = () => void;

/** Starts delivering; returns a cancel function that stops all timers (call it on 'close'). */
export function deliver(res: ServerResponse, plan: DeliveryPlan, onDeliberateReset: OnDeliberateReset): () => void {
  const { pieces, cut } = plan;
  // Without a per-token delay every tick is due at once: one write instead of one per token.
  const tickEnds = plan.tickIntervalMs > 0 ? plan.tickEnds : [pieces.length];
  if (plan.firstTickMs <= 0 && plan.tickIntervalMs <= 0 && cut === null) {
    res.writeHead(plan.status, plan.headers);
    res.end(pieces.length === 1 ? pieces[0] : pieces.join(''));
    return noop;
  }

  const start = performance.now();
  let timer: NodeJS.Timeout | null = null;
  let cancelled = false;
  let headersWritten = false;
  let written = 0;
  let tick = 0;
  let cutDone = cut === null || cut.afterPieces >= pieces.length;
  /** Time added by a finite stall: later ticks keep their spacing after it. */
  let shiftMs = 0;

  const run = (): void => {
    timer = null;
    while (!cancelled) {
      const due = start + shiftMs + plan.firstTickMs + tick * plan.tickIntervalMs;
      const wait = due - performance.now();
      // Node timers can fire a fraction of a millisecond early; that is close enough.
      if (wait > 1) {
        timer = setTimeout(run, wait);
        return;
      }
      if (!writeTick()) return;
    }
  };

  /** Writes what tick `tick` still owes; false when delivery ended, stalled or was cut. */
  const writeTick = (): boolean => {
    if (!headersWritten) {
      res.writeHead(plan.status, plan.headers);
      headersWritten = true;
    }
    const tickEnd = tickEnds[tick] ?? pieces.length;
    const stopAt = !cutDone && cut !== null ? Math.min(tickEnd, cut.afterPieces) : tickEnd;
    const chunk = written < stopAt ? pieces.slice(written, stopAt).join('') : '';
    written = Math.max(written, stopAt);
    if (!cutDone && cut !== null && written === cut.afterPieces) {
      cutDone = true;
      applyCut(cut, chunk);
      return false;
    }
    if (written === tickEnd) tick++;
    if (tick >= tickEnds.length) {
      res.end(chunk);
      return false;
    }
    if (chunk.length > 0) res.write(chunk);
    return true;
  };

  const applyCut = (activeCut: Cut, chunk: string): void => {
    if (activeCut.action === 'reset') {
      // Destroy only once the bytes before the cut are flushed, so the client sees exactly them.
      res.write(chunk, () => {
        onDeliberateReset();
        res.destroy();
      });
      return;
    }
    // Flush what comes before the stall (an empty write still sends the headers).
    res.write(chunk);
    if (activeCut.stallMs !== undefined) {
      timer = setTimeout(() => {
        // Resume now with the rest of the current tick; later ticks keep their spacing from here.
        shiftMs = Math.max(shiftMs, performance.now() - (start + plan.firstTickMs + tick * plan.tickIntervalMs));
        run();
      }, activeCut.stallMs);
    }
  };

  run();
  return () => {
    cancelled = true;
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
}

function noop(): void {}
