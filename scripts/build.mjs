/**
 * `npm run build`, and so `npm start` (its prestart): tsc -p tsconfig.build.json plus the assets into
 * dist/. Safe when several run at once from one checkout, and nothing to do when dist/ is up to date.
 *
 * - Up to date: dist/.build-stamp.json records the inputs (gateway/ and shared/ sources and assets, the
 *   tsconfigs, package.json, package-lock.json, these scripts) as they stood when its build started: the
 *   list of their paths and the newest mtime. Same list, nothing newer, dist/gateway/main.js there: skip.
 * - One build at a time: the lock is the directory dist/.build-lock (mkdir either creates it or fails).
 *   A second build waits for it, then normally finds dist/ up to date and skips. A lock whose process
 *   died (or older than 15 minutes) is taken over.
 * - Never a half-written module: tsc writes into dist/.build-<pid>-<random>/, beside the files it
 *   replaces. Once it succeeded, each file is renamed over its counterpart in dist/; rename() replaces a
 *   file atomically, so a process loading dist/ at any moment reads every file whole and never misses
 *   one. Files the new build no longer has are removed after; the stamp is written last. A failed
 *   compile leaves dist/ as it was.
 *
 * What remains: a process that starts loading dist/ while a build of *changed* sources is renaming
 * files in can get some modules from each build. `npm start` builds first, so it only meets this when
 * the sources are edited during another's start.
 *
 * Usage: node scripts/build.mjs [--force]    (--force: build even when dist/ is up to date)
 * SPILLWAY_BUILD_TSC: a script run with this node instead of TypeScript's tsc, with the same arguments (tests).
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ASSET_DIRS, copyAssets } from './copy-assets.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DIST = join(ROOT, 'dist');
/** Every entry of the build's own starts with this, at the top of dist/; nothing tsc emits does. */
const INTERNAL = '.build';
const STAMP = join(DIST, `${INTERNAL}-stamp.json`);
const LOCK = join(DIST, `${INTERNAL}-lock`);
const OWNER = 'owner.json';
const ENTRY = join(DIST, 'gateway', 'main.js');
const SOURCE_DIRS = ['gateway', 'shared'];
const INPUT_FILES = [
  'tsconfig.json',
  'tsconfig.build.json',
  'package.json',
  'package-lock.json',
  'scripts/build.mjs',
  'scripts/copy-assets.mjs',
];
const LOCK_WAIT_MS = 10 * 60_000;
const LOCK_MAX_AGE_MS = 15 * 60_000;
/** A lock directory without its owner file yet: its creator is between mkdir and write, unless it died there. */
const OWNERLESS_GRACE_MS = 10_000;

const log = (message) => console.log(`build: ${message}`);

// ---- inputs and the stamp ------------------------------------------------------------------------

/** Relative paths of every file under `dir` (absolute), '/'-separated. */
function filesUnder(dir, base = dir) {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (error) {
    if (error.code === 'ENOENT') return [];
    throw error;
  }
  const files = [];
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...filesUnder(path, base));
    else files.push(relative(base, path).split(sep).join('/'));
  }
  return files;
}

/** What tsc (include gateway, shared; exclude *.test.ts) and copyAssets read, plus the build's own settings. */
function inputs() {
  const paths = [];
  for (const dir of SOURCE_DIRS) {
    for (const file of filesUnder(join(ROOT, dir))) {
      const path = `${dir}/${file}`;
      const asset = ASSET_DIRS.some((assetDir) => path.startsWith(`${assetDir}/`));
      if (asset || (/\.(ts|json)$/.test(path) && !path.endsWith('.test.ts'))) paths.push(path);
    }
  }
  for (const file of INPUT_FILES) if (existsSync(join(ROOT, file))) paths.push(file);
  paths.sort();
  let newestMtimeMs = 0;
  for (const path of paths) newestMtimeMs = Math.max(newestMtimeMs, statSync(join(ROOT, path)).mtimeMs);
  return { list: createHash('sha256').update(paths.join('\n')).digest('hex'), files: paths.length, newestMtimeMs };
}

function upToDate(state) {
  if (!existsSync(ENTRY)) return false;
  let stamp;
  try {
    stamp = JSON.parse(readFileSync(STAMP, 'utf8'));
  } catch {
    return false;
  }
  return stamp.list === state.list && state.newestMtimeMs <= stamp.newestMtimeMs;
}

function writeStamp(state) {
  const temporary = `${STAMP}.${process.pid}`;
  writeFileSync(temporary, JSON.stringify({ ...state, builtAt: new Date().toISOString() }) + '\n');
  renameSync(temporary, STAMP);
}

// ---- the lock ------------------------------------------------------------------------------------

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

function readOwner(lockDir) {
  try {
    return JSON.parse(readFileSync(join(lockDir, OWNER), 'utf8'));
  } catch {
    return null;
  }
}

/** The lock's inode when it is stale (its owner gone), else null. */
function staleLock() {
  let stat;
  try {
    stat = statSync(LOCK);
  } catch {
    return null;
  }
  const owner = readOwner(LOCK);
  const age = Date.now() - stat.mtimeMs;
  const stale =
    age > LOCK_MAX_AGE_MS ||
    (owner === null && age > OWNERLESS_GRACE_MS) ||
    (owner !== null && owner.host === hostname() && !alive(owner.pid));
  return stale ? stat.ino : null;
}

/** Moves a stale lock aside; puts it back if what moved turns out to be a newer, live lock. */
function takeOver(staleIno) {
  const aside = `${LOCK}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    renameSync(LOCK, aside);
  } catch (error) {
    if (error.code === 'ENOENT') return; // another waiter took it over first
    throw error;
  }
  if (statSync(aside).ino !== staleIno) {
    try {
      renameSync(aside, LOCK);
      return;
    } catch {
      // A third process holds a new lock by now; the one moved aside will find it gone when it releases.
    }
  }
  rmSync(aside, { recursive: true, force: true });
}

let held = null; // { token, tmp } while this process holds the lock
let compiler = null; // the tsc child while it runs

async function acquireLock() {
  const token = `${process.pid}-${randomBytes(6).toString('hex')}`;
  const since = Date.now();
  let announced = false;
  for (;;) {
    try {
      mkdirSync(LOCK);
      held = { token, tmp: null };
      writeFileSync(join(LOCK, OWNER), JSON.stringify({ pid: process.pid, host: hostname(), token, at: new Date().toISOString() }));
      return;
    } catch (error) {
      if (error.code !== 'EEXIST') throw error;
    }
    const staleIno = staleLock();
    if (staleIno !== null) {
      log('taking over the lock of a build that is gone');
      takeOver(staleIno);
      continue;
    }
    if (!announced) {
      log(`waiting for the build of pid ${readOwner(LOCK)?.pid ?? '?'} to finish`);
      announced = true;
    }
    if (Date.now() - since > LOCK_WAIT_MS) throw new Error(`${relative(ROOT, LOCK)} still held after ${LOCK_WAIT_MS / 60_000} minutes`);
    await sleep(100);
  }
}

/** Removes this process's temporary output and lock (only if the lock is still its own). Synchronous: runs in signal handlers. */
function cleanUp() {
  compiler?.kill('SIGTERM');
  if (held === null) return;
  if (held.tmp !== null) rmSync(held.tmp, { recursive: true, force: true });
  if (readOwner(LOCK)?.token === held.token) rmSync(LOCK, { recursive: true, force: true });
  held = null;
}

// ---- the build -----------------------------------------------------------------------------------

/** Temporary outputs of builds whose process is gone (crashed, killed). */
function removeAbandonedOutputs() {
  for (const name of readdirSync(DIST)) {
    const match = /^\.build-(\d+)-[0-9a-f]+$/.exec(name);
    if (match && Number(match[1]) !== process.pid && !alive(Number(match[1]))) {
      rmSync(join(DIST, name), { recursive: true, force: true });
    }
  }
}

function runTsc(outDir) {
  const tsc = process.env.SPILLWAY_BUILD_TSC || createRequire(import.meta.url).resolve('typescript/bin/tsc');
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', outDir], {
      cwd: ROOT,
      stdio: 'inherit',
    });
    compiler = child;
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      compiler = null;
      if (code === 0) resolvePromise();
      else reject(new Error(`tsc failed (${signal ?? `exit code ${code}`}); dist/ is unchanged`));
    });
  });
}

/** tsc wrote the map for a file one directory deeper than where it goes: make its sources relative to the final place. */
function relocateSourceMap(mapFile, finalFile) {
  const map = JSON.parse(readFileSync(mapFile, 'utf8'));
  if (!Array.isArray(map.sources) || (map.sourceRoot ?? '') !== '') return;
  map.sources = map.sources.map((source) =>
    relative(dirname(finalFile), resolve(dirname(mapFile), source))
      .split(sep)
      .join('/'),
  );
  writeFileSync(mapFile, JSON.stringify(map));
}

/** Renames `from` over `to`; a directory in the way (a module that became a folder, or back) is removed first. */
function replace(from, to) {
  mkdirSync(dirname(to), { recursive: true });
  try {
    renameSync(from, to);
  } catch (error) {
    if (!['EISDIR', 'ENOTDIR', 'ENOTEMPTY', 'EEXIST'].includes(error.code)) throw error;
    rmSync(to, { recursive: true, force: true });
    renameSync(from, to);
  }
}

/** Deletes what dist/ holds that the new build does not (its own entries aside), then empty directories. */
function removeStale(keep) {
  const visit = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (dir === DIST && entry.name.startsWith(INTERNAL)) continue;
      if (entry.isDirectory()) {
        visit(path);
        if (readdirSync(path).length === 0) rmSync(path, { recursive: true, force: true });
      } else if (!keep.has(relative(DIST, path).split(sep).join('/'))) {
        rmSync(path, { force: true });
      }
    }
  };
  visit(DIST);
}

async function build(state) {
  removeAbandonedOutputs();
  const tmp = join(DIST, `${INTERNAL}-${process.pid}-${randomBytes(4).toString('hex')}`);
  held.tmp = tmp;
  const started = Date.now();
  await runTsc(tmp);
  copyAssets(tmp, ROOT);
  const files = filesUnder(tmp);
  for (const file of files) if (file.endsWith('.map')) relocateSourceMap(join(tmp, file), join(DIST, file));
  // From here on dist/ is a mix until the last rename: no stamp meanwhile, so a crash means a rebuild.
  rmSync(STAMP, { force: true });
  for (const file of files) replace(join(tmp, file), join(DIST, file));
  removeStale(new Set(files));
  rmSync(tmp, { recursive: true, force: true });
  held.tmp = null;
  writeStamp(state);
  log(`compiled ${state.files} inputs into dist/ in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

async function main() {
  const force = process.argv.includes('--force');
  mkdirSync(DIST, { recursive: true });
  if (!force && upToDate(inputs())) return log('dist/ is up to date');
  await acquireLock();
  try {
    // The inputs as they stand before tsc reads them: an edit during the build leaves the stamp older than it.
    const state = inputs();
    if (!force && upToDate(state)) return log('dist/ is up to date (built meanwhile by another build)');
    await build(state);
  } finally {
    cleanUp();
  }
}

for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
  ['SIGHUP', 129],
]) {
  process.once(signal, () => {
    cleanUp();
    process.exit(code);
  });
}

main().catch((error) => {
  cleanUp();
  console.error(`build: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
