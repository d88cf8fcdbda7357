/**
 * scripts/build.mjs, the build behind `npm run build` and `npm start`: two at once from one checkout
 * both end with a whole dist/ that loads, a start while another build runs works, nobody ever reads a
 * half-written module, and an up-to-date dist/ is not rebuilt.
 *
 * Each test runs in a copy of the project in a temporary directory (its node_modules a link to ours), so
 * the checkout's own dist/ is never touched. One real tsc build (two at once); the rest use a fake tsc
 * that copies that build's output slowly, each file written in two halves, as tsc does when it is slow.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { until } from '../helpers/fixtures.ts';

/** The build script line these tests expect in package.json. */
const BUILD_SCRIPT = 'node scripts/build.mjs';
const ROOT = process.cwd();
const COPIED = ['gateway', 'shared', 'scripts', 'tsconfig.json', 'tsconfig.build.json', 'package-lock.json'];

const FAKE_TSC = `
// A stand-in for tsc -p <config> --outDir <dir>: copies FAKE_TSC_FROM into the outDir, every file in two halves.
import { mkdirSync, openSync, readdirSync, readFileSync, writeSync, closeSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
if (process.env.FAKE_TSC_FAIL) { console.log('error TS2322: fake'); process.exit(2); }
const outDir = process.argv[process.argv.indexOf('--outDir') + 1];
const from = process.env.FAKE_TSC_FROM;
const pause = Number(process.env.FAKE_TSC_PAUSE_MS ?? 1);
const walk = (dir) => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
for (const file of walk(from)) {
  const to = join(outDir, relative(from, file));
  mkdirSync(dirname(to), { recursive: true });
  let text = readFileSync(file);
  // tsc writes a map's sources relative to where it writes the map: here one directory deeper than dist/.
  if (file.endsWith('.map')) {
    const map = JSON.parse(text.toString());
    map.sources = map.sources.map((source) => '../' + source);
    text = Buffer.from(JSON.stringify(map));
  }
  const fd = openSync(to, 'w');
  writeSync(fd, text.subarray(0, text.length >> 1));
  await sleep(pause);
  writeSync(fd, text.subarray(text.length >> 1));
  closeSync(fd);
}
`;

interface Run {
  code: number | null;
  output: string;
}

/** Runs `command args` in `cwd` to its end. */
function run(cwd: string, command: string, args: string[], env: Record<string, string> = {}): { child: ChildProcess; done: Promise<Run> } {
  const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const done = new Promise<Run>((resolve) => child.once('close', (code) => resolve({ code, output })));
  return { child, done };
}

/** A copy of the project whose package.json has the expected build line. */
function projectCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'spillway-build-'));
  for (const entry of COPIED) cpSync(join(ROOT, entry), join(dir, entry), { recursive: true });
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  pkg.scripts.build = BUILD_SCRIPT;
  writeFileSync(join(dir, 'package.json'), JSON.stringify(pkg, null, 2));
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  return dir;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)));
}

/** The build's output without its own entries (.build-stamp.json, .build-lock, temporary directories). */
function outputFiles(dist: string): string[] {
  return filesUnder(dist)
    .filter((file) => !file.startsWith('.build'))
    .sort();
}

/** Imports dist/gateway/app.js (and so every module it needs) in a fresh node: what `npm start` loads. */
async function importApp(project: string): Promise<Run> {
  const url = pathToFileURL(join(project, 'dist/gateway/app.js')).href;
  const code = `const m = await import(${JSON.stringify(url)}); if (typeof m.createGateway !== 'function') process.exit(3);`;
  return run(project, process.execPath, ['--input-type=module', '-e', code]).done;
}

describe('scripts/build.mjs', () => {
  const projects: string[] = [];
  const children: ChildProcess[] = [];
  let project: string;
  /** A copy of the real build's output: what the fake tsc emits. */
  let reference: string;
  let referenceFiles: Map<string, Buffer>;
  let fakeTsc: string;

  before(() => {
    project = projectCopy();
    projects.push(project);
    reference = mkdtempSync(join(tmpdir(), 'spillway-build-ref-'));
    projects.push(reference);
    fakeTsc = join(reference, 'fake-tsc.mjs');
  });
  after(() => {
    for (const child of children) child.kill('SIGKILL');
    for (const dir of projects) rmSync(dir, { recursive: true, force: true });
  });

  test("package.json's build runs scripts/build.mjs, and start builds first", () => {
    const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    assert.equal(scripts.build, BUILD_SCRIPT);
    assert.equal(scripts.prestart, 'npm run build');
  });

  test('two `npm run build` at once (real tsc): both succeed, one compiles, dist/ loads', { timeout: 90_000 }, async () => {
    const [first, second] = await Promise.all([run(project, 'npm', ['run', 'build']).done, run(project, 'npm', ['run', 'build']).done]);
    assert.equal(first.code, 0, first.output);
    assert.equal(second.code, 0, second.output);
    const outputs = [first.output, second.output];
    assert.equal(outputs.filter((o) => o.includes('build: compiled')).length, 1, outputs.join('\n----\n'));
    assert.equal(outputs.filter((o) => o.includes('up to date')).length, 1, 'the other waited, then found dist/ built');
    const dist = join(project, 'dist');
    assert.ok(existsSync(join(dist, 'shared/store/lua/acquire.lua')), 'the assets are copied');
    assert.deepEqual(
      readdirSync(dist).filter((name) => name.startsWith('.build')),
      ['.build-stamp.json'],
      'no lock or temporary output left',
    );
    const map = JSON.parse(readFileSync(join(dist, 'gateway/main.js.map'), 'utf8')) as { sources: string[] };
    assert.deepEqual(map.sources, ['../../gateway/main.ts'], 'source maps point at the sources from where they end up');
    const loaded = await importApp(project);
    assert.equal(loaded.code, 0, loaded.output);

    for (const file of outputFiles(dist)) cpSync(join(dist, file), join(reference, 'out', file));
    referenceFiles = new Map(outputFiles(join(reference, 'out')).map((file) => [file, readFileSync(join(reference, 'out', file))]));
    writeFileSync(fakeTsc, FAKE_TSC);
  });

  const fake = (extra: Record<string, string> = {}) => ({ SPILLWAY_BUILD_TSC: fakeTsc, FAKE_TSC_FROM: join(reference, 'out'), ...extra });

  test('an up-to-date dist/ is not rebuilt; an edited, added or removed source is', async () => {
    const quick = await run(project, process.execPath, ['scripts/build.mjs'], fake()).done;
    assert.equal(quick.code, 0, quick.output);
    assert.match(quick.output, /dist\/ is up to date/);

    const source = join(project, 'gateway/env.ts');
    const later = new Date(statSync(source).mtimeMs + 5000);
    utimesSync(source, later, later);
    const edited = await run(project, process.execPath, ['scripts/build.mjs'], fake()).done;
    assert.match(edited.output, /build: compiled/, 'an edited source');

    writeFileSync(join(project, 'dist/gateway/leftover.js'), 'export {};\n');
    const added = join(project, 'shared/added.ts');
    writeFileSync(added, 'export const added = 1;\n');
    utimesSync(added, new Date(0), new Date(0)); // older than the stamp: only the list of inputs changed
    const grown = await run(project, process.execPath, ['scripts/build.mjs'], fake()).done;
    assert.match(grown.output, /build: compiled/, 'a new source file');
    assert.ok(!existsSync(join(project, 'dist/gateway/leftover.js')), 'what the build no longer emits leaves dist/');
    rmSync(added);
    const shrunk = await run(project, process.execPath, ['scripts/build.mjs'], fake()).done;
    assert.match(shrunk.output, /build: compiled/, 'a removed source file');
    assert.deepEqual(outputFiles(join(project, 'dist')), [...referenceFiles.keys()].sort());
  });

  test('a failed compile leaves dist/ as it was, and no lock', async () => {
    const failed = await run(project, process.execPath, ['scripts/build.mjs', '--force'], fake({ FAKE_TSC_FAIL: '1' })).done;
    assert.equal(failed.code, 1, failed.output);
    assert.match(failed.output, /tsc failed.*dist\/ is unchanged/);
    assert.deepEqual(
      readdirSync(join(project, 'dist')).filter((name) => name.startsWith('.build')),
      ['.build-stamp.json'],
    );
    assert.equal((await importApp(project)).code, 0);
  });

  test('a lock left by a build that died is taken over', async () => {
    const dist = join(project, 'dist');
    const dead = run(project, process.execPath, ['-e', '']);
    await dead.done;
    const lock = join(dist, '.build-lock');
    mkdirSync(join(dist, `.build-${dead.child.pid}-00ff`));
    writeFileSync(join(dist, `.build-${dead.child.pid}-00ff/half.js`), 'export const half');
    mkdirSync(lock);
    writeFileSync(join(lock, 'owner.json'), JSON.stringify({ pid: dead.child.pid, host: hostname(), token: 'x' }));
    const built = await run(project, process.execPath, ['scripts/build.mjs', '--force'], fake()).done;
    assert.equal(built.code, 0, built.output);
    assert.match(built.output, /taking over the lock/);
    assert.deepEqual(
      readdirSync(dist).filter((name) => name.startsWith('.build')),
      ['.build-stamp.json'],
      'the dead build’s lock and temporary output are gone',
    );
  });

  test('`npm start` while another build runs: it waits, skips the build and serves', { timeout: 30_000 }, async () => {
    const source = join(project, 'shared/operation.ts');
    const later = new Date(Date.now() + 1000);
    utimesSync(source, later, later);
    const building = run(project, process.execPath, ['scripts/build.mjs'], fake({ FAKE_TSC_PAUSE_MS: '20' }));
    children.push(building.child);
    await until(() => existsSync(join(project, 'dist/.build-lock')), 5000, 'the first build to hold the lock');

    const env: Record<string, string> = { ...fake(), PORT: '0', LOG_LEVEL: 'info' };
    const startEnv = { ...process.env, ...env };
    delete startEnv.GATEWAY_CONFIG;
    delete startEnv.REDIS_URL;
    delete startEnv.HOST;
    const start = spawn('npm', ['start'], { cwd: project, env: startEnv, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    children.push(start);
    let output = '';
    start.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`npm start did not listen in 20 s: ${output}`)), 20_000);
        createInterface({ input: start.stdout! }).on('line', (line) => {
          output += `${line}\n`;
          if (line.includes('"gateway listening"')) {
            clearTimeout(timer);
            resolve(String((JSON.parse(line) as { url: string }).url));
          }
        });
        start.once('exit', (code) => reject(new Error(`npm start exited with ${code}: ${output}`)));
      });
      assert.equal((await fetch(`${url}/readyz`)).status, 200);
      const first = await building.done;
      assert.equal(first.code, 0, first.output);
      assert.match(first.output, /build: compiled/);
      assert.match(output, /waiting for the build of pid \d+/);
      assert.match(output, /up to date \(built meanwhile/);
    } finally {
      if (start.pid !== undefined) process.kill(-start.pid, 'SIGTERM'); // npm and the gateway under it
    }
  });

  test('readers never see a half-written file while builds run over each other', { timeout: 30_000 }, async () => {
    const dist = join(project, 'dist');
    const builds = Array.from({ length: 4 }, () => run(project, process.execPath, ['scripts/build.mjs', '--force'], fake()));
    for (const b of builds) children.push(b.child);
    let finished = false;
    const all = Promise.all(builds.map((b) => b.done)).finally(() => (finished = true));
    let reads = 0;
    const imports: Promise<Run>[] = [];
    while (!finished) {
      for (const [file, content] of referenceFiles) {
        let read: Buffer;
        try {
          read = readFileSync(join(dist, file));
        } catch (error) {
          assert.fail(`${file} missing mid-build: ${(error as Error).message}`);
        }
        assert.ok(read.equals(content), `${file} read whole (${read.length} of ${content.length} bytes)`);
        reads++;
      }
      if (imports.length < 6) imports.push(importApp(project));
      await new Promise((resolve) => setImmediate(resolve));
    }
    for (const result of await all) assert.equal(result.code, 0, result.output);
    for (const result of await Promise.all(imports)) assert.equal(result.code, 0, result.output);
    assert.ok(reads > referenceFiles.size, `read dist/ more than once while building (${reads} reads)`);
  });
});
