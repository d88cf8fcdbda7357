/**
 * README's promise to a newcomer: with no configuration the gateway runs on its embedded defaults and
 * the quick-start curl and openai SDK snippet work exactly as written (only the port differs here).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { freePort } from './helpers/redis-server.ts';
import { until } from './helpers/fixtures.ts';
import { DEMO_CLIENT_KEY } from '../gateway/demo.ts';
import { readEnv } from '../gateway/env.ts';

const readme = readFileSync('README.md', 'utf8');
const quickStart = readme.slice(readme.indexOf('## Quick start'), readme.indexOf('## Tests'));
const blocks = [...quickStart.matchAll(/```(\w+)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1], code: m[2]! }));

const scripts = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> }).scripts;

describe('README against the project', () => {
  test('the run and test commands are the ones package.json provides', () => {
    assert.deepEqual(blocks[0]?.code.trim().split('\n'), ['npm ci', 'npm start']);
    assert.ok(readme.includes('```sh\nnpm test\n```'));
    assert.ok(scripts.start, 'package.json has a start script');
    // "`npm start` builds the project": the build runs before start.
    assert.match(scripts.prestart ?? '', /\bnpm run build\b/);
    assert.ok(scripts.build);
    // `npm test` runs every test file with the global setup README describes (the private redis-server).
    assert.match(scripts.test ?? '', /^node --test\b/);
    assert.match(scripts.test ?? '', /--test-global-setup=test\/global-setup\.ts/);
    assert.ok(readme.includes('`test/global-setup.ts`'));
    assert.match(scripts.test ?? '', /'test\/\*\*\/\*\.test\.ts'/);
    // Every `npm run <script>` README mentions exists.
    const named = [...readme.matchAll(/\bnpm run ([\w:-]+)/g)].map((m) => m[1]!);
    assert.ok(named.includes('lint'));
    for (const name of new Set(named)) assert.ok(scripts[name], `package.json has the script "${name}" README runs`);
  });

  test("the quick start's port and key are the gateway's defaults", () => {
    const defaults = readEnv({});
    const curl = blocks.find((b) => b.lang === 'sh' && b.code.includes('curl'));
    assert.ok(curl, 'README has a curl');
    assert.equal(curl.code.match(/localhost:(\d+)/)?.[1], String(defaults.PORT), 'the curl goes to the default PORT');
    assert.equal(curl.code.match(/-H 'api-key: ([^']+)'/)?.[1], DEMO_CLIENT_KEY, "the curl's key is the demo client's");
    const snippet = blocks.find((b) => b.lang === 'js');
    assert.ok(snippet, 'README has an SDK snippet');
    assert.equal(snippet.code.match(/endpoint: 'http:\/\/localhost:(\d+)'/)?.[1], String(defaults.PORT));
    assert.equal(snippet.code.match(/apiKey: '([^']+)'/)?.[1], DEMO_CLIENT_KEY);
    assert.ok(
      quickStart.includes(`new OpenAI({ baseURL: 'http://localhost:${defaults.PORT}/openai/v1', apiKey: '${DEMO_CLIENT_KEY}' })`),
      'the OpenAI-style line too',
    );
    assert.ok(quickStart.includes(`on port ${defaults.PORT}`));
    // The environment table states the same defaults.
    for (const [name, value] of [
      ['PORT', defaults.PORT],
      ['HOST', defaults.HOST],
      ['LOG_LEVEL', defaults.LOG_LEVEL],
    ] as const) {
      assert.ok(readme.includes(`| \`${name}\` | \`${value}\` |`), `README's environment table: ${name} defaults to ${value}`);
    }
  });
});

describe('README on the demo', () => {
  test('the quick start says the demo listens on 127.0.0.1 only, and the HOST row says so too', () => {
    assert.match(quickStart, /127\.0\.0\.1/);
    const hostRow = readme.split('\n').find((line) => line.startsWith('| `HOST` |'));
    assert.ok(hostRow?.includes('127.0.0.1'), `the HOST row names the demo's address: ${hostRow}`);
  });
});

describe('README quick start', () => {
  let port: number;
  let child: ReturnType<typeof spawn>;
  before(async () => {
    port = await freePort();
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), LOG_LEVEL: 'warn' };
    delete env.GATEWAY_CONFIG;
    delete env.REDIS_URL;
    child = spawn(process.execPath, ['gateway/main.ts'], { env, stdio: 'ignore' });
    await until(
      async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200,
      15_000,
      'the demo gateway',
    );
  });
  after(() => {
    child.kill('SIGTERM');
  });
  const onOurPort = (code: string) => code.replaceAll(`localhost:${readEnv({}).PORT}`, `localhost:${port}`);

  test('the curl works as written', () => {
    const curl = blocks.find((b) => b.lang === 'sh' && b.code.includes('curl'));
    assert.ok(curl, 'README has a curl');
    const out = execFileSync('bash', ['-c', onOurPort(curl.code)], { encoding: 'utf8', timeout: 15_000 });
    const body = JSON.parse(out) as { object: string; choices: { message: { content: string } }[] };
    assert.equal(body.object, 'chat.completion');
    assert.ok(body.choices[0]!.message.content.length > 0);
  });

  test('the embeddings curl works as written', () => {
    const curl = blocks.find((b) => b.lang === 'sh' && b.code.includes('/embeddings'));
    assert.ok(curl, 'README has an embeddings curl');
    const body = JSON.parse(execFileSync('bash', ['-c', onOurPort(curl.code)], { encoding: 'utf8', timeout: 15_000 })) as {
      object: string;
      data: unknown[];
    };
    assert.equal(body.object, 'list');
    assert.ok(body.data.length > 0);
  });

  /** Runs a README snippet inside node_modules, so that `import ... from 'openai'` resolves to the project's package. */
  const runSnippet = (code: string, name: string) => {
    mkdirSync('node_modules/.cache/spillway', { recursive: true });
    const file = `node_modules/.cache/spillway/${name}.mjs`;
    writeFileSync(file, onOurPort(code));
    return execFileSync(process.execPath, [file], { encoding: 'utf8', timeout: 15_000 });
  };

  test('the openai SDK snippet works as written', () => {
    const snippet = blocks.find((b) => b.lang === 'js');
    assert.ok(snippet, 'README has an SDK snippet');
    const out = runSnippet(snippet.code, 'readme-snippet');
    assert.ok(out.trim().split(/\s+/).length >= 5, `streamed words: ${out}`);
  });

  test('the Responses curl and the follow-up snippet work as written', () => {
    const curl = blocks.find((b) => b.lang === 'sh' && b.code.includes('/openai/v1/responses'));
    assert.ok(curl, 'README has a Responses curl');
    const body = JSON.parse(execFileSync('bash', ['-c', onOurPort(curl.code)], { encoding: 'utf8', timeout: 15_000 })) as {
      id: string;
      object: string;
    };
    assert.equal(body.object, 'response');
    assert.match(body.id, /^resp_sw1/);
    const snippet = blocks.find((b) => b.lang === 'js' && b.code.includes('previous_response_id'));
    assert.ok(snippet, 'README has a Responses snippet');
    const out = runSnippet(snippet.code, 'readme-responses');
    assert.ok(out.trim().split(/\s+/).length >= 5, `streamed words: ${out}`);
  });
});
