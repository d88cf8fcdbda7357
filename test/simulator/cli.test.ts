/**
 * The simulator CLI: prints its URL as one JSON line, serves, and stops cleanly on SIGTERM/SIGINT.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';

const CLI = join(import.meta.dirname, '..', '..', 'shared', 'simulator', 'cli.ts');

function runCli(args: string[]): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
}

async function firstLine(child: ChildProcessWithoutNullStreams): Promise<string> {
  const lines = createInterface({ input: child.stdout });
  const timeout = setTimeout(() => child.kill('SIGKILL'), 10_000);
  try {
    for await (const line of lines) return line;
    throw new Error('the CLI exited without printing a line');
  } finally {
    clearTimeout(timeout);
    lines.close();
  }
}

async function stop(child: ChildProcessWithoutNullStreams, signal: NodeJS.Signals): Promise<number | null> {
  const exited = once(child, 'exit');
  child.kill(signal);
  const [code] = (await exited) as [number | null];
  return code;
}

test('flags: prints {url, port, deployments}, serves them, exits 0 on SIGTERM', async () => {
  const child = runCli(['--port', '0', '--deployments', 'a,b', '--tpm', '6000', '--api-key', 'cli-key', '--completion-tokens', '2']);
  try {
    const started = JSON.parse(await firstLine(child)) as { url: string; port: number; deployments: string[] };
    assert.match(started.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(started.url, `http://127.0.0.1:${started.port}`);
    assert.deepEqual(started.deployments, ['a', 'b']);
    const res = await fetch(`${started.url}/openai/deployments/b/chat/completions?api-version=2024-10-21`, {
      method: 'POST',
      headers: { 'api-key': 'cli-key' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }] }),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-ratelimit-limit-tokens'), '6000');
    assert.equal(((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]?.message.content, ' the quick');
  } finally {
    assert.equal(await stop(child, 'SIGTERM'), 0);
  }
});

test('config file (YAML) and SIGINT', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sim-cli-'));
  const config = join(dir, 'sim.yaml');
  writeFileSync(
    config,
    [
      'apiKeys: [from-file]',
      'windowMs: 6000',
      'deployments:',
      '  - name: ptu-a',
      '    ptu: { tokensPerMinute: 5000 }',
      '  - name: std',
      '    tpm: 1000',
      '',
    ].join('\n'),
  );
  const child = runCli(['--config', config]);
  try {
    const started = JSON.parse(await firstLine(child)) as { url: string; deployments: string[] };
    assert.deepEqual(started.deployments, ['ptu-a', 'std']);
    const res = await fetch(`${started.url}/openai/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer from-file' },
      body: JSON.stringify({ model: 'ptu-a', messages: [{ role: 'user', content: 'Hi' }] }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('azure-openai-deployment-utilization') ?? '', /^\d+(\.\d)?%$/);
    await res.arrayBuffer();
  } finally {
    assert.equal(await stop(child, 'SIGINT'), 0);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--help prints usage; a bad option exits 2 with the reason', async () => {
  const help = runCli(['--help']);
  let text = '';
  help.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()));
  const [helpCode] = (await once(help, 'exit')) as [number];
  assert.equal(helpCode, 0);
  assert.match(text, /Usage: npm run simulator -- \[options\]/);
  assert.match(text, /--per-token-ms/);

  const bad = runCli(['--tpm', 'lots']);
  let errors = '';
  bad.stderr.on('data', (chunk: Buffer) => (errors += chunk.toString()));
  const [badCode] = (await once(bad, 'exit')) as [number];
  assert.equal(badCode, 2);
  assert.match(errors, /--tpm needs a number/);
});
