/**
 * Pages of a client's files or batches, from its list ZSETs (id -> sequence of creation), newest first
 * or oldest first, after a cursor (the last id of the previous page, as OpenAI's `after`). Entries whose
 * record expired are dropped from the list as they are met; a page is at most `limit` records.
 */
import type { Cluster, Redis } from 'ioredis';

export interface PageRequest {
  limit: number;
  /** The sequence number of the `after` record; undefined for the first page. */
  afterSeq?: number;
  order: 'asc' | 'desc';
}

export interface Page<T> {
  data: T[];
  hasMore: boolean;
}

/** Rounds of reading when expired entries fill a page (each round drops the ones it found for good). */
const MAX_ROUNDS = 10;

export async function readPage<T extends { seq: number }>(
  redis: Redis | Cluster,
  lists: readonly string[],
  request: PageRequest,
  load: (id: string) => Promise<T | undefined>,
): Promise<Page<T>> {
  const wanted = request.limit + 1;
  const found: T[] = [];
  let cursor = request.afterSeq;
  for (let round = 0; round < MAX_ROUNDS && found.length < wanted; round++) {
    const entries = await nextEntries(redis, lists, cursor, request.order, wanted - found.length);
    if (entries.length === 0) break;
    const records = await Promise.all(entries.map((entry) => load(entry.id)));
    entries.forEach((entry, i) => {
      const record = records[i];
      if (record) found.push(record);
      else void redis.zrem(entry.list, entry.id).catch(() => undefined);
    });
    cursor = entries.at(-1)!.seq;
  }
  return { data: found.slice(0, request.limit), hasMore: found.length > request.limit };
}

interface Entry {
  list: string;
  id: string;
  seq: number;
}

/** The next `count` entries past the cursor, over all the lists (merged by sequence). */
async function nextEntries(
  redis: Redis | Cluster,
  lists: readonly string[],
  cursor: number | undefined,
  order: 'asc' | 'desc',
  count: number,
): Promise<Entry[]> {
  const replies = await Promise.all(
    lists.map((list) =>
      order === 'desc'
        ? redis.zrevrangebyscore(list, cursor === undefined ? '+inf' : `(${cursor}`, '-inf', 'WITHSCORES', 'LIMIT', 0, count)
        : redis.zrangebyscore(list, cursor === undefined ? '-inf' : `(${cursor}`, '+inf', 'WITHSCORES', 'LIMIT', 0, count),
    ),
  );
  const entries: Entry[] = [];
  replies.forEach((reply, i) => {
    for (let j = 0; j + 1 < reply.length; j += 2) entries.push({ list: lists[i]!, id: reply[j]!, seq: Number(reply[j + 1]) });
  });
  entries.sort((a, b) => (order === 'desc' ? b.seq - a.seq : a.seq - b.seq));
  return entries.slice(0, count);
}
