/**
 * Waiting for room (pools with maxWaitMs): a saturated request holds a ticket in the pool's
 * first-come-first-served queue, in the store, and polls until it is granted or its wait runs out.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { QueueTicket, Store } from '../../shared/store/types.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { Pool } from '../pools.ts';
import type { Refusal } from './leasing.ts';

/** Polling bounds while a request waits for room. */
const MIN_POLL_MS = 10;
const MAX_POLL_MS = 100;
/** A waiter that stops polling (its instance died) loses its place after this. */
const QUEUE_TICKET_TTL_MS = 1_000;

/** How a wait ended, for spillway_queue_wait_seconds: room granted, maxWaitMs ran out, or anything else (client gone, deadline, the pool broken rather than full). */
export type WaitOutcome = 'granted' | 'timed-out' | 'abandoned';

export interface WaitTicketOptions {
  /** False: the request waits for room by polling alone, with no place in the queue. */
  queued: boolean;
  /** False: the request never waits, whatever the pool's maxWaitMs (background lines: they are answered at once). */
  waits?: boolean;
  /** Counts the waiting requests and how long they waited. */
  metrics?: Metrics;
}

export class WaitTicket {
  /** True when the pool lets requests wait (maxWaitMs). */
  readonly enabled: boolean;
  /** The place in the pool's queue; absent when the request does not wait, or waits outside the queue. */
  private readonly ticket: QueueTicket | undefined;
  private readonly pool: string;
  private readonly waitUntil: number;
  private readonly logger: Logger;
  /** The store the ticket waits in: the fallback's queue once Redis failed, not Redis's. */
  private waitingIn: Store | undefined;
  private readonly metrics: Metrics | undefined;
  /** performance.now() when the request started waiting (its first refusal); undefined while it does not wait. */
  private waitingSince: number | undefined;

  constructor(pool: Pool, startedAt: number, logger: Logger, options: WaitTicketOptions = { queued: true }) {
    this.enabled = pool.config.maxWaitMs > 0 && options.waits !== false;
    this.ticket = this.enabled && options.queued ? { ticket: randomUUID(), ttlMs: QUEUE_TICKET_TTL_MS } : undefined;
    this.pool = pool.name;
    this.waitUntil = startedAt + pool.config.maxWaitMs;
    this.logger = logger;
    this.metrics = options.metrics;
  }

  /** The ticket to send with the store's acquire. */
  get queue(): QueueTicket | undefined {
    return this.ticket;
  }

  /** Notes the store that answered the acquire: the ticket now waits there (or, `granted`, its wait is over). */
  waitsIn(store: Store, granted = false): void {
    this.waitingIn = store;
    if (granted) this.stopWaiting('granted');
  }

  /**
   * After a refusal: sleeps until the next poll and returns true while the request may go on waiting
   * (it has a ticket, time is left, and the pool is saturated rather than broken).
   */
  async waitForRoom(refusal: Refusal, saturated: boolean): Promise<boolean> {
    // A millisecond left (a timer fires up to one early) is nothing to wait for: the wait is over.
    const over = this.waitUntil - Date.now() <= 1;
    if (!this.enabled || !saturated || over) {
      this.stopWaiting(over ? 'timed-out' : 'abandoned');
      return false;
    }
    if (this.waitingSince === undefined) {
      this.waitingSince = performance.now();
      this.metrics?.queueWaiting.inc({ pool: this.pool });
    }
    // Never past the end of the wait: a timer that fired a millisecond early leaves 1 ms, not another poll interval.
    const poll = Math.max(MIN_POLL_MS, Math.min(refusal.retryAfterMs, MAX_POLL_MS));
    await sleep(Math.min(poll, this.waitUntil - Date.now()));
    return true;
  }

  /** The request no longer waits: counted once, with how long it waited; a no-op when it is not waiting. */
  stopWaiting(outcome: WaitOutcome): void {
    if (this.waitingSince === undefined) return;
    const waitedMs = performance.now() - this.waitingSince;
    this.waitingSince = undefined;
    this.metrics?.queueWaiting.dec({ pool: this.pool });
    this.metrics?.queueWait.observe({ pool: this.pool, outcome }, waitedMs / 1000);
  }

  /** Gives up the place in the queue (granted tickets have left it already: then this is a no-op in the store). */
  async leave(): Promise<void> {
    if (!this.ticket || !this.waitingIn) return;
    await this.waitingIn
      .leaveQueue(this.pool, this.ticket.ticket)
      .catch((error: Error) => this.logger.warn('could not leave the wait queue', { error: error.message }));
  }
}
