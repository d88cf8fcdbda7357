/**
 * Summary of a V8 .cpuprofile (node --cpu-prof): self time per function and per area (a package in
 * node_modules, node internals, gateway/, shared/, GC), and inclusive time of the repository's own
 * functions. Also runnable: node loadtest/lib/cpuprofile.ts FILE.cpuprofile [FROM_US]
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileLine {
  name: string;
  where: string;
  ms: number;
  share: number;
}

export interface ProfileSummary {
  /** Sampled time inside the window. */
  totalMs: number;
  /** Sampled time before the window (start-up, warm-up), left out. */
  skippedMs: number;
  /** Busy time: everything but (idle). */
  busyMs: number;
  selfByFunction: ProfileLine[];
  selfByArea: ProfileLine[];
  /** Inclusive time of functions in gateway/ and shared/ (recursion counted once). */
  inclusiveOwn: ProfileLine[];
}

function shortUrl(url: string): string {
  const modules = url.lastIndexOf('/node_modules/');
  if (modules !== -1) return url.slice(modules + '/node_modules/'.length);
  const own = /\/(gateway|shared|loadtest|test)\/.*$/.exec(url);
  if (own) return own[0].slice(1);
  return url.replace(/^file:\/\//, '');
}

function areaOf(url: string, functionName: string): string {
  if (!url) {
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(idle)') return '(idle)';
    if (functionName === '(program)') return '(program: native/V8)';
    return `native: ${functionName || '(anonymous)'}`;
  }
  const modules = url.lastIndexOf('/node_modules/');
  if (modules !== -1) {
    const rest = url.slice(modules + '/node_modules/'.length).split('/');
    return rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1] ?? ''}` : (rest[0] ?? url);
  }
  if (url.startsWith('node:')) {
    const parts = url.slice(5).split('/');
    return `node:${parts[0] === 'internal' ? parts.slice(0, 2).join('/') : parts[0]}`;
  }
  const own = /\/(gateway|shared)\/([^/]+)/.exec(url);
  if (own) return `${own[1]}/${own[2]}`;
  return shortUrl(url);
}

type Tally = Map<string, { name: string; where: string; us: number }>;

/** Self time per node inside the window; timeDeltas[i] is the time before sample i, attributed to the next sample's node. */
function selfTimes(profile: CpuProfile, fromUs: number): { selfUs: Map<number, number>; skippedUs: number } {
  const selfUs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  let at = profile.startTime;
  let skippedUs = 0;
  for (let index = 0; index < samples.length; index++) {
    at += deltas[index] ?? 0;
    const id = samples[index]!;
    const delta = Math.max(0, deltas[index + 1] ?? 0);
    if (at < fromUs) {
      skippedUs += delta;
      continue;
    }
    selfUs.set(id, (selfUs.get(id) ?? 0) + delta);
  }
  return { selfUs, skippedUs };
}

/** Self time per function and per area, and the idle time, which counts in neither. */
function selfByFunctionAndArea(byId: Map<number, ProfileNode>, selfUs: Map<number, number>) {
  const selfFn: Tally = new Map();
  const selfArea = new Map<string, number>();
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const name = functionName || '(anonymous)';
    const where = url ? `${shortUrl(url)}:${lineNumber + 1}` : '';
    const key = `${name} ${where}`;
    const entry = selfFn.get(key) ?? { name, where, us: 0 };
    entry.us += us;
    selfFn.set(key, entry);
    const area = areaOf(url, functionName);
    selfArea.set(area, (selfArea.get(area) ?? 0) + us);
  }
  return { selfFn, selfArea, idleUs };
}

/** Inclusive time of own functions: walk the tree, count a function once per stack. */
function inclusiveOwnTimes(profile: CpuProfile, byId: Map<number, ProfileNode>, selfUs: Map<number, number>): Tally {
  const inclusiveUs: Tally = new Map();
  const subtreeUs = new Map<number, number>();
  const subtree = (id: number): number => {
    const cached = subtreeUs.get(id);
    if (cached !== undefined) return cached;
    const node = byId.get(id);
    let sum = selfUs.get(id) ?? 0;
    for (const child of node?.children ?? []) sum += subtree(child);
    subtreeUs.set(id, sum);
    return sum;
  };
  const root = profile.nodes[0];
  if (!root) return inclusiveUs;
  const stack: { id: number; open: Set<string> }[] = [{ id: root.id, open: new Set() }];
  while (stack.length > 0) {
    const { id, open } = stack.pop()!;
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    let nextOpen = open;
    if (/\/(gateway|shared)\//.test(url) && !url.includes('/node_modules/')) {
      const name = functionName || '(anonymous)';
      const where = `${shortUrl(url)}:${lineNumber + 1}`;
      const key = `${name} ${where}`;
      if (!open.has(key)) {
        const entry = inclusiveUs.get(key) ?? { name, where, us: 0 };
        entry.us += subtree(id);
        inclusiveUs.set(key, entry);
        nextOpen = new Set(open);
        nextOpen.add(key);
      }
    }
    for (const child of node.children ?? []) stack.push({ id: child, open: nextOpen });
  }
  return inclusiveUs;
}

/**
 * `fromUs`: leave out samples taken before this time (µs on the monotonic clock, which is what V8's
 * profile timestamps and process.hrtime use on Linux), e.g. the start-up and warm-up.
 */
export function summarizeProfile(profile: CpuProfile, top = 20, fromUs = 0): ProfileSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const { selfUs, skippedUs } = selfTimes(profile, fromUs);
  const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const { selfFn, selfArea, idleUs } = selfByFunctionAndArea(byId, selfUs);
  const inclusiveUs = inclusiveOwnTimes(profile, byId, selfUs);
  const busyUs = totalUs - idleUs;
  const line = (name: string, where: string, us: number): ProfileLine => ({
    name,
    where,
    ms: Math.round(us / 100) / 10,
    share: busyUs > 0 ? us / busyUs : 0,
  });
  const topOf = (tally: Tally) =>
    [...tally.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((e) => line(e.name, e.where, e.us));
  return {
    totalMs: Math.round(totalUs / 1000),
    skippedMs: Math.round(skippedUs / 1000),
    busyMs: Math.round(busyUs / 1000),
    selfByFunction: topOf(selfFn),
    selfByArea: [...selfArea.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([area, us]) => line(area, '', us)),
    inclusiveOwn: topOf(inclusiveUs),
  };
}

export function readProfile(file: string): CpuProfile {
  return JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node loadtest/lib/cpuprofile.ts FILE.cpuprofile [FROM_US]');
    process.exit(2);
  }
  const summary = summarizeProfile(readProfile(file), 25, Number(process.argv[3] ?? 0));
  const show = (title: string, lines: ProfileLine[]) => {
    console.log(`\n${title}`);
    for (const l of lines)
      console.log(`${(l.share * 100).toFixed(1).padStart(5)} %  ${l.ms.toFixed(0).padStart(6)} ms  ${l.name}  ${l.where}`);
  };
  console.log(`profile: ${summary.totalMs} ms sampled (${summary.skippedMs} ms before the window left out), ${summary.busyMs} ms busy`);
  show('self time by area', summary.selfByArea);
  show('self time by function', summary.selfByFunction);
  show('inclusive time, gateway/ and shared/ functions', summary.inclusiveOwn);
}
