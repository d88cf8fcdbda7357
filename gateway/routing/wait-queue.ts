/**
 * Waiting for room (pools with maxWaitMs): a saturated request holds a ticket in the pool's
 * first-come-first-served queue, in the store, and polls until it is granted or its wait runs out.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { QueueTicket, Store } from '../../shared/store/types.ts';
import type { Logger } from '../logger.ts';
import type { Pool } from '../pools.ts';
import type { Refusal } from './leasing.ts';

/** Polling bounds while a request waits for room. */
const MIN_POLL_MS = 10;
const MAX_POLL_MS = 100;
/** A waiter that stops polling (its instance died) loses its place after this. */
const QUEUE_TICKET_TTL_MS = 1_000;

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

  /** `queued: false`: the request waits for room by polling alone, with no place in the queue. */
  constructor(pool: Pool, startedAt: number, logger: Logger, options: { queued: boolean } = { queued: true }) {
    this.enabled = pool.config.maxWaitMs > 0;
    this.ticket = this.enabled && options.queued ? { ticket: randomUUID(), ttlMs: QUEUE_TICKET_TTL_MS } : undefined;
    this.pool = pool.name;
    this.waitUntil = startedAt + pool.config.maxWaitMs;
    this.logger = logger;
  }

  /** The ticket to send with the store's acquire. */
  get queue(): QueueTicket | undefined {
    return this.ticket;
  }

  /** Notes the store that answered the acquire: the ticket now waits there. */
  waitsIn(store: Store): void {
    this.waitingIn = store;
  }

  /**
   * After a refusal: sleeps until the next poll and returns true while the request may go on waiting
   * (it has a ticket, time is left, and the pool is saturated rather than broken).
   */
  async waitForRoom(refusal: Refusal, saturated: boolean): Promise<boolean> {
    if (!this.enabled || !saturated || Date.now() >= this.waitUntil) return false;
    // Never past the end of the wait: a timer that fired a millisecond early leaves 1 ms, not another poll interval.
    const poll = Math.max(MIN_POLL_MS, Math.min(refusal.retryAfterMs, MAX_POLL_MS));
    await sleep(Math.min(poll, this.waitUntil - Date.now()));
    return true;
  }

  /** Gives up the place in the queue (granted tickets have left it already: then this is a no-op in the store). */
  async leave(): Promise<void> {
    if (!this.ticket || !this.waitingIn) return;
    await this.waitingIn
      .leaveQueue(this.pool, this.ticket.ticket)
      .catch((error: Error) => this.logger.warn('could not leave the wait queue', { error: error.message }));
  }
}
