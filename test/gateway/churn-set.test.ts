/**
 * ChurnSet: a set's behaviour, and why it exists: a long-lived Set that gains and loses a member per
 * request keeps its former members alive through young-generation GCs (they end up in the old
 * generation); a ChurnSet does not.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ChurnSet } from '../../gateway/churn-set.ts';

describe('ChurnSet', () => {
  test('adds, finds, deletes and lists its members', () => {
    const [a, b, c] = [{ n: 1 }, { n: 2 }, { n: 3 }];
    const set = new ChurnSet<{ n: number }>();
    set.add(a).add(b).add(c).add(b);
    assert.equal(set.size, 3);
    assert.ok(set.has(a) && set.has(b) && set.has(c));
    assert.equal(set.delete(a), true);
    assert.equal(set.delete(a), false);
    assert.equal(set.has(a), false);
    assert.deepEqual(new Set(set.values()), new Set([b, c]));
    assert.equal(set.delete(c), true);
    assert.equal(set.delete(b), true);
    assert.equal(set.size, 0);
    assert.deepEqual(set.values(), []);
  });

  test('a member can belong to two sets, and its slot is invisible to spreads and comparisons', () => {
    const member = { n: 1 };
    const first = new ChurnSet<{ n: number }>();
    const second = new ChurnSet<{ n: number }>();
    first.add({ n: 0 }).add(member);
    second.add(member);
    first.delete(member);
    assert.equal(first.has(member), false);
    assert.equal(second.has(member), true);
    assert.deepEqual({ ...member }, { n: 1 });
    assert.deepStrictEqual(member, { n: 1 });
    // A copy that carries the slot property too is still not a member: membership is by identity.
    assert.equal(second.has(Object.defineProperties({ n: 0 }, Object.getOwnPropertyDescriptors(member))), false);
  });

  test('values is a copy: deleting while going through it is safe', () => {
    const members = Array.from({ length: 10 }, (_, n) => ({ n }));
    const set = new ChurnSet<{ n: number }>();
    for (const member of members) set.add(member);
    for (const member of set.values()) set.delete(member);
    assert.equal(set.size, 0);
    for (const member of members) assert.equal(set.has(member), false);
  });

  test('churned one member in, one out, it keeps nothing alive through young-generation GCs (a Set does)', () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as (options?: { type: 'minor' | 'major' }) => void;
    const oldSpaceUsed = () => getHeapSpaceStatistics().find((space) => space.space_name === 'old_space')!.space_used_size;
    /** Old-space growth over a churn of ~1 KB members, 16 at a time, with only young-generation GCs meanwhile. */
    const promotedBy = (set: { add(member: object): unknown; delete(member: object): unknown }) => {
      // The collection (and its storage) in the old generation first, as the listener's is.
      const warm = Array.from({ length: 64 }, () => ({}));
      for (const member of warm) set.add(member);
      for (const member of warm) set.delete(member);
      gc({ type: 'major' });
      gc({ type: 'major' });
      const before = oldSpaceUsed();
      const live: object[] = [];
      for (let i = 0; i < 20_000; i++) {
        const member = { payload: new Array(128).fill(i) };
        set.add(member);
        live.push(member);
        if (live.length > 16) set.delete(live.shift()!);
        if (i % 1000 === 999) gc({ type: 'minor' });
      }
      for (const member of live.splice(0)) set.delete(member);
      gc({ type: 'minor' });
      gc({ type: 'minor' });
      return oldSpaceUsed() - before;
    };
    const MiB = 1024 * 1024;
    // ChurnSet first: after the Set's run V8 may allocate the members straight into the old
    // generation (allocation-site pretenuring), which would blur the second measurement.
    const byChurnSet = promotedBy(new ChurnSet());
    const bySet = promotedBy(new Set());
    assert.ok(bySet > 4 * MiB, `a churned Set promoted only ${(bySet / MiB).toFixed(1)} MiB: the reason for ChurnSet is gone?`);
    assert.ok(byChurnSet < MiB, `a churned ChurnSet promoted ${(byChurnSet / MiB).toFixed(1)} MiB`);
  });
});
