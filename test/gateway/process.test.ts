import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { networkInterfaces, platform, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import type { Simulator } from '../../shared/simulator/index.ts';
import { createStore } from '../../shared/store/index.ts';
import type { PoolLayout, Store } from '../../shared/store/types.ts';
import { spawnGateway, testConfig, type GatewayProcess } from '../helpers/gateway.ts';
import { chat, simulator, uniquePool, until } from '../helpers/fixtures.ts';
import { DEMO_CLIENT_KEY } from '../../gateway/demo.ts';

describe('gateway processes', () => {
  let sim: Simulator;
  let store: Store;
  const processes: GatewayProcess[] = [];
  before(async () => {
    sim = await simulator(['d1', 'd2']);
    store = createStore({ redisUrl: process.env.REDIS_URL });
  });
  after(async () => {
    await Promise.all(processes.map((p) => p.stop('SIGKILL')));
    await store.close();
    await sim.close();
  });

  test('kill -9 of an instance mid-load: its leases are reaped and in-flight returns to true', async () => {
    const pool = uniquePool();
    const config = testConfig({
      pools: {
        [pool]: {
          deployments: [
            { id: 'd1', endpoint: sim.url },
            { id: 'd2', endpoint: sim.url },
          ],
        },
      },
      gateway: { leaseMs: 1500 },
    });
    const layout: PoolLayout = {
      name: pool,
      strategy: 'least-requests',
      deployments: [
        { id: 'd1', priority: 1, weight: 1 },
        { id: 'd2', priority: 1, weight: 1 },
      ],
    };
    const [victim, survivor] = await Promise.all([spawnGateway(config), spawnGateway(config)]);
    processes.push(victim!, survivor!);
    sim.setFault('d1', { fault: { kind: 'hang' } });
    sim.setFault('d2', { fault: { kind: 'hang' } });
    const pending = Array.from({ length: 4 }, () => chat(victim!.url, pool).catch(() => undefined));
    const total = async () => (await store.snapshot(layout)).reduce((sum, d) => sum + d.inFlight, 0);
    await until(async () => (await total()) === 4, 3000, 'four leases');
    // The victim renews its leases while alive: they outlive their first deadline.
    await new Promise((resolve) => setTimeout(resolve, 1800));
    assert.equal(await total(), 4, 'live leases are renewed');
    const killedAt = Date.now();
    await victim!.stop('SIGKILL');
    await Promise.all(pending);
    await until(async () => (await total()) === 0, 4000, 'the dead instance’s leases to be reaped');
    const reapedAfter = Date.now() - killedAt;
    assert.ok(reapedAfter <= 1500 + 1000, `reaped ${reapedAfter} ms after the kill, within the lease`);
    // The survivor routes evenly again: its first two requests spread over both deployments.
    sim.reset();
    const responses = await Promise.all([chat(survivor!.url, pool), chat(survivor!.url, pool)]);
    assert.deepEqual(
      responses.map((r) => r.status),
      [200, 200],
    );
    assert.deepEqual(new Set(responses.map((r) => r.headers.get('x-gateway-deployment'))), new Set(['d1', 'd2']));
  });

  test('SIGTERM stops the process cleanly and logs one JSON line per request', async () => {
    const pool = uniquePool();
    const gw = await spawnGateway(testConfig({ pools: { [pool]: { deployments: [{ id: 'd1', endpoint: sim.url }] } } }));
    processes.push(gw);
    const response = await chat(gw.url, pool, { headers: { 'x-request-id': 'log-check-1' } });
    assert.equal(response.status, 200);
    await until(() => gw.logs.some((l) => l.requestId === 'log-check-1'), 2000, 'the request log line');
    const line = gw.logs.find((l) => l.requestId === 'log-check-1')!;
    assert.equal(line.pool, pool);
    assert.equal(line.deployment, 'd1');
    assert.equal(line.status, 200);
    assert.equal(line.attempts, 1);
    assert.equal(line.client, 'tests');
    assert.equal(typeof line.latencyMs, 'number');
    assert.ok(Number(line.totalTokens) > 0, 'tokens from upstream usage');
    const everything = JSON.stringify(gw.logs);
    assert.ok(!everything.includes('upstream-test-key') && !everything.includes('client-test-key'), 'no key in any log line');
    await gw.stop('SIGTERM');
    assert.equal(gw.child.exitCode, 0);
  });

  test('an invalid config stops start-up with one line per problem', () => {
    const dir = mkdtempSync(join(tmpdir(), 'spillway-bad-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(
      file,
      'pools:\n  p:\n    strategy: fastest\n    deployments:\n      - {id: a, endpoint: nope, deployment: d, apiKey: "${MISSING_KEY_VAR}", tpm: 0}\n',
    );
    const result = spawnSync(process.execPath, ['gateway/main.ts'], {
      env: { ...process.env, GATEWAY_CONFIG: file, PORT: '0' },
      encoding: 'utf8',
      timeout: 10_000,
    });
    assert.equal(result.status, 1);
    assert.equal(
      result.stderr.trim(),
      [
        `spillway: invalid config ${file}:`,
        '  - pools.p.deployments[0].apiKey: environment variable MISSING_KEY_VAR is not set',
        '  - pools.p.strategy: must be one of least-requests, round-robin, random, power-of-two, weighted',
        '  - pools.p.deployments[0].endpoint: must be an http(s) URL',
        '  - pools.p.deployments[0].tpm: must be positive',
      ].join('\n'),
    );
  });
});

describe('the built-in demo process (no GATEWAY_CONFIG)', () => {
  interface Demo {
    child: ChildProcess;
    url: string;
    port: number;
    /** The bound address the "gateway listening" line reports. */
    host: string;
    /** Everything the process printed that is not a JSON log line: the banner. */
    banner: () => string;
  }
  const demos: Demo[] = [];

  async function startDemo(env: Record<string, string> = {}): Promise<Demo> {
    const childEnv: NodeJS.ProcessEnv = { ...process.env, PORT: '0', LOG_LEVEL: 'info', ...env };
    delete childEnv.GATEWAY_CONFIG;
    delete childEnv.REDIS_URL;
    if (env.HOST === undefined) delete childEnv.HOST;
    const child = spawn(process.execPath, ['gateway/main.ts'], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const listening = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the demo did not start in 15 s: ${stderr}`)), 15_000);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        let entry: Record<string, unknown> | undefined;
        try {
          entry = JSON.parse(line) as Record<string, unknown>;
        } catch {
          text += `${line}\n`;
        }
        if (entry?.message === 'gateway listening') {
          clearTimeout(timer);
          resolve(entry);
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the demo exited with ${code}: ${stderr}`));
      });
    });
    const url = String(listening.url);
    const demo: Demo = { child, url, port: Number(new URL(url).port), host: String(listening.host), banner: () => text };
    demos.push(demo);
    // The banner follows the log line: wait for its last curl.
    await until(() => text.includes('/embeddings'), 5000, 'the banner');
    return demo;
  }
  after(() => {
    for (const { child } of demos) child.kill('SIGKILL');
  });

  /**
   * An address of this machine other than 127.0.0.1: a non-loopback interface's IPv4, else on Linux
   * 127.0.0.2 (all of 127/8 is local there, but a socket bound to 127.0.0.1 does not accept it).
   */
  function otherLocalAddress(): string | null {
    const external = Object.values(networkInterfaces())
      .flat()
      .find((address) => address !== undefined && address.family === 'IPv4' && !address.internal);
    if (external) return external.address;
    return platform() === 'linux' ? '127.0.0.2' : null;
  }

  /** 'connected' or the connection error's code. */
  function tryConnect(host: string, port: number): Promise<string> {
    return new Promise((resolve) => {
      const socket = connect({ host, port, timeout: 2000 });
      socket.once('connect', () => {
        socket.destroy();
        resolve('connected');
      });
      socket.once('timeout', () => {
        socket.destroy();
        resolve('ETIMEDOUT');
      });
      socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    });
  }

  const post = (url: string, pool: string, operation: string, body: unknown) =>
    fetch(`${url}/openai/deployments/${pool}/${operation}?api-version=2024-10-21`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': DEMO_CLIENT_KEY },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });

  let demo: Demo;
  before(async () => {
    demo = await startDemo();
  });

  test('listens on 127.0.0.1 only unless HOST says otherwise, and its banner says so', async () => {
    assert.equal(demo.host, '127.0.0.1', 'the "gateway listening" line');
    assert.equal(new URL(demo.url).hostname, '127.0.0.1');
    assert.match(demo.banner(), /Listening on 127\.0\.0\.1 only/);
    assert.equal((await fetch(`${demo.url}/readyz`)).status, 200);
    const other = otherLocalAddress();
    if (other !== null) {
      assert.notEqual(await tryConnect(other, demo.port), 'connected', `${other}:${demo.port} must not accept connections`);
    }
  });

  test('HOST=0.0.0.0 opens the demo to every address', async () => {
    const open = await startDemo({ HOST: '0.0.0.0' });
    assert.equal(open.host, '0.0.0.0');
    assert.match(open.banner(), /Listening on 0\.0\.0\.0: other machines can reach it/);
    const other = otherLocalAddress();
    if (other !== null) assert.equal(await tryConnect(other, open.port), 'connected', `${other}:${open.port}`);
    open.child.kill('SIGTERM');
  });

  test("the banner's curls work as printed: chat on gpt-4o, embeddings on text-embedding-3-small", () => {
    const curls = demo
      .banner()
      .replaceAll('\\\n', ' ')
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line.startsWith('curl '));
    assert.equal(curls.length, 2, demo.banner());
    const [chatBody, embeddingsBody] = curls.map(
      (curl) => JSON.parse(execFileSync('bash', ['-c', curl], { encoding: 'utf8', timeout: 15_000 })) as Record<string, unknown>,
    );
    assert.equal(chatBody?.object, 'chat.completion');
    assert.equal(embeddingsBody?.object, 'list');
    assert.equal(embeddingsBody?.model, 'text-embedding-3-small');
    assert.equal((embeddingsBody?.data as unknown[]).length, 2);
  });

  test('the embeddings pool spreads over its deployments; a wrong operation gets Azure’s 400 through the gateway', async () => {
    // At once, so least-requests spreads them over both deployments (one at a time, ties go at random).
    const responses = await Promise.all(
      Array.from({ length: 4 }, (_, i) => post(demo.url, 'text-embedding-3-small', 'embeddings', { input: `text ${i}` })),
    );
    const served = new Set<string | null>();
    for (const response of responses) {
      assert.equal(response.status, 200);
      served.add(response.headers.get('x-gateway-deployment'));
      await response.arrayBuffer();
    }
    assert.deepEqual([...served].sort(), ['eastus', 'swedencentral']);

    const refusal = (operation: string, model: string) => ({
      error: {
        code: 'OperationNotSupported',
        message: `The ${operation} operation does not work with the specified model, ${model}. Please choose different model and try again. You can learn more about which models can be used with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993.`,
      },
    });
    const embeddingsOnChat = await post(demo.url, 'gpt-4o', 'embeddings', { input: 'hello' });
    assert.equal(embeddingsOnChat.status, 400);
    assert.equal(embeddingsOnChat.headers.get('x-gateway-attempts'), '1', 'a 400 is not failed over');
    assert.deepEqual(await embeddingsOnChat.json(), refusal('embeddings', 'gpt-4o'));
    const chatOnEmbeddings = await post(demo.url, 'text-embedding-3-small', 'chat/completions', {
      messages: [{ role: 'user', content: 'hi' }],
    });
    assert.equal(chatOnEmbeddings.status, 400);
    assert.deepEqual(await chatOnEmbeddings.json(), refusal('chatCompletion', 'text-embedding-3-small'));
  });
});
