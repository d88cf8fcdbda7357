/**
 * Fairness between the clients whose batches share a pool: start-time fair queuing (Goyal et al.) on
 * BullMQ priorities. Each line gets a tag; lines start in tag order (lower first). A batch's lines get
 * consecutive tags from max(virtual time, the client's next tag), and the client's next tag moves past
 * them. The virtual time is the tag of the line that starts next (the head of the pool's queue), so it
 * advances as lines start: a batch that arrives while another client's 10 000 lines wait is not put
 * behind them but interleaved with them, one line each, and a client's second batch queues behind its
 * first instead of doubling its share. Unit cost per line: the client quotas (tpm) bound tokens, and
 * lines of one batch are alike.
 *
 * Tags restart at 1 whenever a batch arrives at a pool with no line waiting, which is what keeps them
 * inside BullMQ's priority range (1 … 2 097 151). A pool whose queue never empties while more than two
 * million lines pass through it would reach the top: lines past it all get the top priority and run
 * first-come-first-served behind every fairly ordered line, until the queue next empties.
 */
import { readFileSync } from 'node:fs';
import type { Queue } from 'bullmq';
import type { Cluster, Redis } from 'ioredis';

/** BullMQ's highest priority (lowest urgency): 2^21 − 1. */
export const MAX_PRIORITY = 2_097_151;

/** An idle pool's tags are forgotten after this (a round restarts when its queue is empty anyway). */
const TAGS_TTL_MS = 7 * 24 * 60 * 60_000;

const COMMAND = 'spillwayLaneReserveTags';
type ReserveTags = (key: string, client: string, virtual: string, count: number, ttlMs: number) => Promise<number>;

/** The BullMQ priority of a tag: the tag itself, or the top of the range once past it. */
export function priorityOf(tag: number): number {
  return Math.min(Math.max(1, tag), MAX_PRIORITY);
}

export class FairOrder {
  private readonly redis: Redis | Cluster;
  private readonly keyPrefix: string;

  constructor(redis: Redis | Cluster, keyPrefix: string) {
    this.redis = redis;
    this.keyPrefix = keyPrefix;
    if (!(COMMAND in redis)) {
      const lua = readFileSync(new URL('./lua/reserve-tags.lua', import.meta.url), 'utf8');
      redis.defineCommand(COMMAND, { numberOfKeys: 1, lua });
    }
  }

  /** The first of `count` consecutive tags for a batch of `client` in the pool whose line queue is `queue`. */
  async reserve(queue: Queue, pool: string, client: string, count: number): Promise<number> {
    const [head] = await queue.getJobs(['prioritized'], 0, 0, true);
    const virtual = head ? String(head.priority) : '';
    const reserveTags = (this.redis as unknown as Record<typeof COMMAND, ReserveTags>)[COMMAND];
    return Number(await reserveTags.call(this.redis, this.tagsKey(pool), client, virtual, count, TAGS_TTL_MS));
  }

  private tagsKey(pool: string): string {
    return `${this.keyPrefix}:tags:${pool}`;
  }
}
