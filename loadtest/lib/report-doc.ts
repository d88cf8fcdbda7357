/** What the benchmarks share to describe the machine and to rewrite their part of a doc in docs/. */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { REPO_ROOT } from './stack.ts';

export function cpuModel(): string {
  try {
    return /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? 'unknown';
  } catch {
    return cpus()[0]?.model ?? 'unknown';
  }
}

/**
 * Replaces what stands between the two markers of `file` with `section`, keeping the hand-written
 * rest; a file without the markers gets them appended (under `heading` when the file is new).
 */
export function writeDocSection(file: string, start: string, end: string, section: string, heading: string): void {
  const current = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const from = current.indexOf(start);
  const to = current.indexOf(end);
  if (from !== -1 && to > from) {
    writeFileSync(file, `${current.slice(0, from + start.length)}\n${section}\n${current.slice(to)}`);
    return;
  }
  writeFileSync(file, `${current}${current ? '\n' : heading}${start}\n${section}\n${end}\n`);
}

/** The commit measured (of this checkout, or of `dir`), flagged when gateway/ or shared/ had uncommitted changes. */
export function gitRevision(dir = REPO_ROOT): string {
  try {
    // stderr ignored: a --compare-with directory need not be a git checkout ('unknown').
    const git = (args: string[]) => execFileSync('git', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const rev = git(['rev-parse', '--short', 'HEAD']);
    const dirty = git(['status', '--porcelain', '--', 'gateway', 'shared']) !== '';
    return `${rev}${dirty ? ' + uncommitted changes in gateway/ or shared/' : ''}`;
  } catch {
    return 'unknown';
  }
}
