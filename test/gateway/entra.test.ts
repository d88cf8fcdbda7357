/**
 * Microsoft Entra ID upstream auth (`auth: entra`), end to end: real gateway processes whose
 * @azure/identity ManagedIdentityCredential finds the App Service / Container Apps endpoint through
 * IDENTITY_ENDPOINT and IDENTITY_HEADER and gets its tokens from the stub of that endpoint
 * (test/helpers/identity-stub.ts). Every process runs under the loopback guard
 * (test/helpers/loopback-only.ts): a connection anywhere but loopback, IMDS's 169.254.169.254
 * included, is refused before it leaves and recorded, and each test asserts there was none.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { AccessToken, TokenCredential } from '@azure/identity';
import { configSchema, type GatewayConfig } from '../../shared/config/schema.ts';
import { buildPools } from '../../gateway/pools.ts';
import { NO_TOKEN_CODE, redact, UpstreamCredentials, type CredentialFactory } from '../../gateway/upstream/credentials.ts';
import { memoryLogger, quietLogger } from '../helpers/collaborators.ts';
import { CLIENT_KEY, UPSTREAM_KEY, spawnGateway, type GatewayProcess } from '../helpers/gateway.ts';
import { chat, simulator, sleep, uniquePool, until } from '../helpers/fixtures.ts';
import { startIdentityStub, COGNITIVE_SERVICES_RESOURCE, type IdentityStub } from '../helpers/identity-stub.ts';
import { readAll, serve, type LocalServer } from '../helpers/local-http.ts';
import { installLoopbackGuard, loopbackOnlyEnv } from '../helpers/loopback-only.ts';

const work = mkdtempSync(join(tmpdir(), 'spillway-entra-'));
// This test process too: an in-process gateway here may never reach anything but loopback either.
const ownGuardLog = join(work, 'test-process.guard.log');
installLoopbackGuard(ownGuardLog);

const USER_ASSIGNED = '6d2c1f0e-4b7a-4c1e-9f3a-2b8d5e7c9a01';

/** Variables that would make @azure/identity pick another source than the stub (or a proxy): unset in every child. */
const FOREIGN_ENV = [
  'IDENTITY_ENDPOINT',
  'IDENTITY_HEADER',
  'IDENTITY_SERVER_THUMBPRINT',
  'MSI_ENDPOINT',
  'MSI_SECRET',
  'IMDS_ENDPOINT',
  'AZURE_FEDERATED_TOKEN_FILE',
  'AZURE_POD_IDENTITY_AUTHORITY_HOST',
  'AZURE_CLIENT_ID',
  'AZURE_TENANT_ID',
  'AZURE_CLIENT_SECRET',
  'AZURE_CLIENT_CERTIFICATE_PATH',
  'AZURE_USERNAME',
  'AZURE_TOKEN_CREDENTIALS',
  'AZURE_LOG_LEVEL',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'ALL_PROXY',
  'http_proxy',
  'https_proxy',
  'all_proxy',
];

interface Guarded {
  gw: GatewayProcess;
  guardLog: string;
  stderr: () => string;
  /** What the guard recorded: blocked connections and loads of @azure/identity. */
  guard(): string[];
}

const running: GatewayProcess[] = [];
let guardCount = 0;

/** A gateway process under the loopback guard, with the stub's endpoint (or none) in its environment. */
async function spawnGuarded(config: GatewayConfig, stub: IdentityStub | undefined, env: Record<string, string> = {}): Promise<Guarded> {
  const guardLog = join(work, `gateway-${++guardCount}.guard.log`);
  const cleared = Object.fromEntries(FOREIGN_ENV.map((name) => [name, undefined]));
  const gw = await spawnGateway(config, {
    ...cleared,
    ...(stub?.env ?? {}),
    ...loopbackOnlyEnv(guardLog),
    LOG_LEVEL: 'debug',
    ...env,
  } as Record<string, string>);
  running.push(gw);
  let stderr = '';
  gw.child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return {
    gw,
    guardLog,
    stderr: () => stderr,
    guard: () => (existsSync(guardLog) ? readFileSync(guardLog, 'utf8').split('\n').filter(Boolean) : []),
  };
}

function blocked(g: Guarded): string[] {
  return g.guard().filter((line) => line.startsWith('blocked'));
}

interface Deployment {
  id: string;
  endpoint: string;
  deployment: string;
  apiKey?: string;
  auth?: 'entra';
  clientId?: string;
  priority?: number;
}

function config(pools: Record<string, Deployment[]>, gateway: Record<string, unknown> = {}): GatewayConfig {
  return configSchema.parse({
    gateway,
    pools: Object.fromEntries(Object.entries(pools).map(([name, deployments]) => [name, { deployments }])),
    clients: [{ name: 'tests', apiKey: CLIENT_KEY }],
  });
}

/** An upstream that records each request's headers and answers a small chat completion. */
interface Recorder extends LocalServer {
  seen: IncomingHttpHeaders[];
}

async function recorder(): Promise<Recorder> {
  const seen: IncomingHttpHeaders[] = [];
  const server = await serve((req, res) => {
    void readAll(req).then(() => {
      seen.push(req.headers);
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          id: 'chatcmpl-recorded',
          object: 'chat.completion',
          created: 0,
          model: 'gpt-4o',
          choices: [{ index: 0, message: { role: 'assistant', content: 'Hi' }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 9, completion_tokens: 1, total_tokens: 10 },
        }),
      );
    });
  });
  return { ...server, seen };
}

function bearerOf(headers: IncomingHttpHeaders | undefined): string | undefined {
  const value = headers?.authorization;
  return value?.startsWith('Bearer ') ? value.slice(7) : undefined;
}

async function readyz(url: string): Promise<{ status: number; body: { status: string; tokenless?: string[] }; text: string }> {
  const response = await fetch(`${url}/readyz`);
  const text = await response.text();
  return { status: response.status, body: JSON.parse(text) as { status: string; tokenless?: string[] }, text };
}

/** Every place a token must never appear, checked for every token the stub may have handed out. */
function assertNoToken(stub: IdentityStub, texts: Record<string, string>): void {
  for (const [where, text] of Object.entries(texts)) {
    for (const token of stub.tokens) assert.ok(!text.includes(token), `a token appeared in ${where}`);
    // Also no fragment long enough to be useful (the signature part alone).
    for (const call of stub.issued()) assert.ok(!text.includes(call.token!.split('.')[2]!), `a token's signature appeared in ${where}`);
  }
}

after(async () => {
  await Promise.all(running.map((gw) => gw.stop('SIGKILL')));
  assert.equal(
    existsSync(ownGuardLog) ? readFileSync(ownGuardLog, 'utf8').trim() : '',
    '',
    'the test process itself reached nothing but loopback',
  );
});

describe('Entra ID upstream auth, against the managed-identity endpoint stub', () => {
  test('Bearer upstream and no api-key; one fetch per identity, reused; a clientId asks for the user-assigned identity', async () => {
    const stub = await startIdentityStub();
    const sim = await simulator(['entra-d', 'key-d'], { apiKeys: [UPSTREAM_KEY, ...stub.tokens] });
    const rec = await recorder();
    try {
      const [simPool, recPool, uaiPool] = [uniquePool('entra'), uniquePool('entra-rec'), uniquePool('entra-uai')];
      const g = await spawnGuarded(
        config({
          [simPool]: [{ id: 'entra', endpoint: sim.url, deployment: 'entra-d', auth: 'entra' }],
          [recPool]: [{ id: 'recorded', endpoint: rec.url, deployment: 'gpt-4o', auth: 'entra' }],
          [uaiPool]: [{ id: 'uai', endpoint: rec.url, deployment: 'gpt-4o', auth: 'entra', clientId: USER_ASSIGNED }],
        }),
        stub,
      );
      for (let i = 0; i < 3; i++) {
        const response = await chat(g.gw.url, simPool);
        assert.equal(response.status, 200, await response.clone().text());
        assert.equal(response.headers.get('x-gateway-deployment'), 'entra');
        assert.equal(response.headers.get('x-gateway-attempts'), '1');
        await response.arrayBuffer();
      }
      const upstream = sim.recentRequests('entra-d');
      assert.equal(upstream.length, 3);
      assert.deepEqual(
        upstream.map((r) => r.auth),
        ['bearer', 'bearer', 'bearer'],
        'the simulator accepted the token as Bearer',
      );

      // The headers themselves: Authorization: Bearer <the stub's token>, and no api-key (not the client's either).
      for (const pool of [recPool, uaiPool]) {
        const response = await chat(g.gw.url, pool, { headers: { authorization: 'Bearer client-own-token' } });
        assert.equal(response.status, 200);
        await response.arrayBuffer();
      }
      const [defaultCall, uaiCall] = [stub.issued().find((c) => !c.clientId), stub.issued().find((c) => c.clientId)];
      assert.ok(defaultCall && uaiCall, 'one fetch for each identity');
      assert.equal(uaiCall.clientId, USER_ASSIGNED, 'the user-assigned identity was asked for by its client id');
      assert.equal(defaultCall.resource, COGNITIVE_SERVICES_RESOURCE, 'the Cognitive Services scope');
      assert.equal(bearerOf(rec.seen[0]), defaultCall.token);
      assert.equal(bearerOf(rec.seen[1]), uaiCall.token, 'the clientId deployment sends its own identity’s token');
      for (const headers of rec.seen) assert.equal(headers['api-key'], undefined, 'no api-key upstream');

      assert.equal(stub.calls.length, 2, 'one fetch per identity for five requests: the token is reused');
      assert.deepEqual(
        stub.calls.map((c) => c.refused),
        [undefined, undefined],
        'the stub saw the App Service secret and api-version',
      );
      assert.ok(g.guard().includes('loaded @azure/identity'), 'the guard sees @azure/identity being loaded');
      assert.deepEqual(blocked(g), [], 'no connection off loopback (no IMDS probe)');
      assert.equal((await readyz(g.gw.url)).status, 200);
    } finally {
      await Promise.all([stub.close(), sim.close(), rec.close()]);
    }
  });

  test('the token is refreshed in the background before it expires; requests meanwhile use the one in hand', async () => {
    const stub = await startIdentityStub({ lifetimeS: 6 });
    const rec = await recorder();
    try {
      const pool = uniquePool('entra-refresh');
      const g = await spawnGuarded(config({ [pool]: [{ id: 'recorded', endpoint: rec.url, deployment: 'gpt-4o', auth: 'entra' }] }), stub);
      await until(async () => (await readyz(g.gw.url)).status === 200, 5000, 'the first token');
      const first = stub.issued()[0]!;
      const r1 = await chat(g.gw.url, pool);
      assert.equal(r1.status, 200);
      assert.equal(bearerOf(rec.seen.at(-1)), first.token);

      // The refresh is slow: no request may wait for it.
      stub.set({ delayMs: 1500 });
      await until(() => stub.calls.length >= 2, 8000, 'the background refresh');
      const refresh = stub.calls[1]!;
      assert.ok(refresh.at < first.expiresAt! - 1000, `refreshed ${first.expiresAt! - refresh.at} ms before expiry`);
      const startedAt = Date.now();
      const r2 = await chat(g.gw.url, pool);
      const tookMs = Date.now() - startedAt;
      assert.equal(r2.status, 200);
      assert.ok(tookMs < 700, `a request during the refresh took ${tookMs} ms: it did not wait for the refresh`);
      assert.equal(bearerOf(rec.seen.at(-1)), first.token, 'the token in hand while the refresh runs');

      await until(() => stub.issued().length >= 2, 5000, 'the refreshed token');
      await sleep(50);
      const r3 = await chat(g.gw.url, pool);
      assert.equal(r3.status, 200);
      assert.equal(bearerOf(rec.seen.at(-1)), stub.issued()[1]!.token, 'the refreshed token is used');
      assert.equal(stub.calls.length, 2, 'one fetch per refresh, none per request');
      assert.deepEqual(blocked(g), []);
    } finally {
      await Promise.all([stub.close(), rec.close()]);
    }
  });

  test('requests that arrive before the first token wait for the one fetch; /readyz is 503 until it came', async () => {
    const stub = await startIdentityStub({ delayMs: 1500 });
    const sim = await simulator(['entra-d'], { apiKeys: [...stub.tokens] });
    try {
      const pool = uniquePool('entra-cold');
      const g = await spawnGuarded(config({ [pool]: [{ id: 'entra', endpoint: sim.url, deployment: 'entra-d', auth: 'entra' }] }), stub);
      const cold = await readyz(g.gw.url);
      assert.equal(cold.status, 503, 'not ready before the first token');
      assert.equal(cold.body.status, 'Entra ID token unavailable');
      assert.deepEqual(cold.body.tokenless, [`${pool}/entra`]);
      const responses = await Promise.all(Array.from({ length: 20 }, () => chat(g.gw.url, pool)));
      assert.deepEqual(
        responses.map((r) => r.status),
        Array(20).fill(200),
      );
      assert.ok(responses.every((r) => r.headers.get('x-gateway-attempts') === '1'));
      await Promise.all(responses.map((r) => r.arrayBuffer()));
      assert.equal(stub.calls.length, 1, 'twenty concurrent requests, one token fetch');
      assert.ok(sim.recentRequests('entra-d').every((r) => r.auth === 'bearer'));
      assert.equal((await readyz(g.gw.url)).status, 200);
      assert.deepEqual(blocked(g), []);
    } finally {
      await Promise.all([stub.close(), sim.close()]);
    }
  });

  test('no token to be had: attempts fail over to a key deployment, an error is logged, /readyz 503; then it recovers; no token anywhere', async () => {
    const stub = await startIdentityStub({ lifetimeS: 3 });
    const sim = await simulator(['entra-d', 'key-d'], { apiKeys: [UPSTREAM_KEY, ...stub.tokens] });
    try {
      const [pool, only] = [uniquePool('entra-fail'), uniquePool('entra-only')];
      const g = await spawnGuarded(
        config({
          [pool]: [
            { id: 'entra', endpoint: sim.url, deployment: 'entra-d', auth: 'entra', priority: 1 },
            { id: 'keyed', endpoint: sim.url, deployment: 'key-d', apiKey: UPSTREAM_KEY, priority: 2 },
          ],
          [only]: [{ id: 'entra', endpoint: sim.url, deployment: 'entra-d', auth: 'entra' }],
        }),
        stub,
      );
      const seen: string[] = [];
      const served = async (target: string) => {
        const response = await chat(g.gw.url, target);
        const text = await response.text();
        seen.push(text, JSON.stringify(Object.fromEntries(response.headers)));
        return {
          status: response.status,
          deployment: response.headers.get('x-gateway-deployment'),
          attempts: response.headers.get('x-gateway-attempts'),
          text,
        };
      };
      await until(async () => (await readyz(g.gw.url)).status === 200, 5000, 'the first token');
      assert.deepEqual(await served(pool), { status: 200, deployment: 'entra', attempts: '1', text: seen.at(-2) });

      stub.set({ failStatus: 500 });
      await until(async () => (await readyz(g.gw.url)).status === 503, 8000, 'readiness to go once the token expired');
      const down = await readyz(g.gw.url);
      seen.push(down.text);
      assert.equal(down.body.status, 'Entra ID token unavailable');
      assert.deepEqual(down.body.tokenless?.sort(), [`${only}/entra`, `${pool}/entra`].sort());

      const failedOver = await served(pool);
      assert.equal(failedOver.status, 200);
      assert.equal(failedOver.deployment, 'keyed', 'the key deployment answered');
      assert.equal(failedOver.attempts, '2', 'the Entra deployment was a failed attempt');
      const nothingElse = await served(only);
      assert.equal(nothingElse.status, 502, 'no other deployment: a connection failure’s 502');
      assert.match(nothingElse.text, /"error"/);

      const errorLines = () => g.gw.logs.filter((l) => l.level === 'error' && String(l.message).startsWith('no Entra ID token'));
      await until(() => errorLines().length > 0, 2000, 'the error line');
      assert.match(String(errorLines()[0]!.error), /ManagedIdentityCredential/, 'what the credential said');
      assert.ok(
        g.gw.logs.some((l) => l.message === 'upstream attempt failed' && l.error === NO_TOKEN_CODE && l.deployment === 'entra'),
        'the attempt failed like a connection failure',
      );

      // One more failed fetch after the error, so the burst has several with no token at all.
      const failedFetches = () => stub.calls.filter((c) => c.status === 500).length;
      const failedSoFar = failedFetches();
      await until(() => failedFetches() > failedSoFar, 8000, 'another failed fetch');
      stub.set({ failStatus: undefined });
      await until(async () => (await readyz(g.gw.url)).status === 200, 15_000, 'readiness once a token can be had again');
      const recovered = await served(pool);
      assert.equal(recovered.status, 200);
      assert.equal(recovered.deployment, 'entra', 'the Entra deployment serves again');
      assert.equal(recovered.attempts, '1');
      assert.ok(g.gw.logs.some((l) => l.message === 'Entra ID token acquired again'));
      assert.equal(errorLines().length, 1, 'logged once for the burst, however many attempts and fetches failed');
      assert.ok(
        sim.recentRequests('key-d').every((r) => r.auth === 'api-key'),
        'the key deployment kept its api-key',
      );

      const metrics = await (await fetch(`${g.gw.url}/metrics`)).text();
      assert.match(metrics, /spillway_upstream_attempts_total\{[^}]*deployment="entra",outcome="error"\}/);
      await sleep(100);
      assertNoToken(stub, {
        'the log lines': g.gw.logs.map((l) => JSON.stringify(l)).join('\n'),
        stderr: g.stderr(),
        'the answers to clients': seen.join('\n'),
        '/metrics': metrics,
      });
      assert.ok(stub.issued().length >= 2, 'tokens were handed out (and so could have leaked)');
      assert.deepEqual(blocked(g), []);
    } finally {
      await Promise.all([stub.close(), sim.close()]);
    }
  });

  test('a config without an Entra deployment creates no credential and never loads @azure/identity', async () => {
    const stub = await startIdentityStub();
    const sim = await simulator(['key-d']);
    try {
      const pool = uniquePool('keys-only');
      const g = await spawnGuarded(
        config({ [pool]: [{ id: 'keyed', endpoint: sim.url, deployment: 'key-d', apiKey: UPSTREAM_KEY }] }),
        stub,
      );
      const response = await chat(g.gw.url, pool);
      assert.equal(response.status, 200);
      assert.equal((await readyz(g.gw.url)).status, 200);
      await sleep(300);
      assert.equal(stub.calls.length, 0, 'the identity endpoint was never called');
      assert.deepEqual(g.guard(), [], '@azure/identity was not even loaded');
      assert.ok(!g.gw.logs.some((l) => String(l.message).includes('Entra')));
      assert.ok(sim.recentRequests('key-d').every((r) => r.auth === 'api-key'));
    } finally {
      await Promise.all([stub.close(), sim.close()]);
    }
  });

  test('the loopback guard refuses and records a connection off loopback', async () => {
    const log = join(work, 'self-test.guard.log');
    // 0.0.0.0 is not loopback to the guard, yet harmless were the guard to let it through (Linux connects it locally).
    const child = spawn(
      process.execPath,
      ['--input-type=module', '-e', "import net from 'node:net'; net.connect(9, '0.0.0.0').on('error', (e) => console.log(e.code));"],
      { env: { ...process.env, ...loopbackOnlyEnv(log) }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    await new Promise((resolve) => child.once('exit', resolve));
    assert.equal(out.trim(), 'ENETUNREACH');
    assert.deepEqual(readFileSync(log, 'utf8').trim().split('\n'), ['blocked 0.0.0.0:9']);
  });
});

/** A credential under the test's control (no @azure/identity, no network). */
function fakeCredential(getToken: (n: number) => Promise<AccessToken | null>): {
  factory: CredentialFactory;
  made: () => number;
  calls: () => number;
} {
  let n = 0;
  let made = 0;
  const credential: TokenCredential = { getToken: () => getToken(n++) };
  return {
    factory: async () => {
      made += 1;
      return credential;
    },
    made: () => made,
    calls: () => n,
  };
}

function deploymentsOf(gatewayConfig: GatewayConfig) {
  return [...buildPools(gatewayConfig).values()].flatMap((pool) => [...pool.deployments.values()]);
}

describe('Entra ID token source (in process, a fake credential)', () => {
  const endpoint = 'http://127.0.0.1:9';
  const pool = 'p';
  const entraOnly = config({ [pool]: [{ id: 'entra', endpoint, deployment: 'd', auth: 'entra' }] });

  test('the key or the token in hand comes synchronously; the factory is called only for an Entra deployment', async () => {
    const fake = fakeCredential(async () => ({ token: 'fake-token', expiresOnTimestamp: Date.now() + 3_600_000 }));
    const keyedDeployments = deploymentsOf(config({ [pool]: [{ id: 'k', endpoint, deployment: 'd', apiKey: 'the-key' }] }));
    const keysOnly = new UpstreamCredentials(keyedDeployments, quietLogger(), { factory: fake.factory });
    const [keyed] = keyedDeployments;
    assert.equal(keysOnly.forAttempt(keyed!, 1000), 'the-key');
    assert.deepEqual(keysOnly.missing(), []);
    await sleep(20);
    assert.equal(fake.made(), 0, 'no credential without an Entra deployment');

    const [entra] = deploymentsOf(entraOnly);
    const credentials = new UpstreamCredentials([entra!], quietLogger(), { factory: fake.factory });
    try {
      const cold = credentials.forAttempt(entra!, 1000);
      assert.ok(cold instanceof Promise, 'before the first token: the attempt waits for the first fetch');
      assert.deepEqual(await cold, { bearer: 'fake-token' });
      const warm = credentials.forAttempt(entra!, 1000);
      assert.deepEqual(warm, { bearer: 'fake-token' }, 'once warm: at once, not a promise');
      assert.deepEqual(credentials.missing(), []);
      assert.equal(fake.calls(), 1);
    } finally {
      credentials.close();
    }
  });

  test('a credential that never answers fails after the fetch timeout: no token, one error, retried', async () => {
    const fake = fakeCredential(() => new Promise(() => undefined));
    const { logger, lines } = memoryLogger();
    const [entra] = deploymentsOf(entraOnly);
    const credentials = new UpstreamCredentials([entra!], logger, { factory: fake.factory, fetchTimeoutMs: 150 });
    try {
      const startedAt = Date.now();
      assert.equal(await credentials.forAttempt(entra!, 5000), undefined);
      assert.ok(Date.now() - startedAt < 1000, 'the attempt waited for the timeout, not for ever');
      assert.deepEqual(credentials.missing(), [`${pool}/entra`]);
      await until(() => fake.calls() >= 3, 3000, 'retries');
      const errors = lines.filter((l) => l.level === 'error');
      assert.equal(errors.length, 1, 'one error for the whole burst');
      assert.match(String(errors[0]!.error), /no token within 150 ms/);
    } finally {
      credentials.close();
    }
  });

  test('a failure whose message carries the token is logged redacted; the token in hand stays in use', async () => {
    const token = 'eyJhbGciOiJub25lIn0.eyJzZWNyZXQiOnRydWV9.c2lnbmF0dXJlLXNlY3JldA';
    const opaque = `opaque-${'x'.repeat(24)}`;
    const fake = fakeCredential(async (n) => {
      if (n === 0) return { token, expiresOnTimestamp: Date.now() + 2000 };
      if (n === 1) throw new Error(`bad answer {"access_token":"${token}"} Authorization: Bearer ${token}`);
      if (n === 2) return { token: opaque, expiresOnTimestamp: Date.now() + 2000 };
      throw new Error(`refused ${opaque}`);
    });
    const { logger, lines } = memoryLogger();
    const [entra] = deploymentsOf(entraOnly);
    const credentials = new UpstreamCredentials([entra!], logger, { factory: fake.factory });
    try {
      await credentials.forAttempt(entra!, 1000);
      await until(() => lines.some((l) => l.level === 'warn'), 3000, 'the failed refresh');
      assert.deepEqual(credentials.forAttempt(entra!, 1000), { bearer: token }, 'still valid: still sent');
      await until(() => fake.calls() >= 4, 5000, 'a failure naming the second token');
      await sleep(50);
      const text = lines.map((l) => JSON.stringify(l)).join('\n');
      assert.ok(!text.includes(token) && !text.includes('c2lnbmF0dXJlLXNlY3JldA'), text);
      assert.ok(!text.includes(opaque), 'a token of no known shape is redacted too, as a token seen');
      assert.match(text, /\[redacted\]/);
    } finally {
      credentials.close();
    }
  });

  test('a credential that hands back the token it holds, already due, is asked again soon, not in a loop', async () => {
    const heldUntil = Date.now() + 1500;
    const fake = fakeCredential(async () => {
      const now = Date.now();
      if (now < heldUntil) return { token: 'held-token', expiresOnTimestamp: now + 3_600_000, refreshAfterTimestamp: now - 1000 };
      return { token: 'next-token', expiresOnTimestamp: now + 3_600_000, refreshAfterTimestamp: now + 1_800_000 };
    });
    const [entra] = deploymentsOf(entraOnly);
    const credentials = new UpstreamCredentials([entra!], quietLogger(), { factory: fake.factory });
    try {
      assert.deepEqual(await credentials.forAttempt(entra!, 1000), { bearer: 'held-token' });
      await until(() => (credentials.forAttempt(entra!, 1000) as { bearer: string }).bearer === 'next-token', 5000, 'the next token');
      const calls = fake.calls();
      assert.ok(calls <= 6, `${calls} calls: asked again with a backoff, not in a loop`);
      await sleep(1000);
      assert.equal(fake.calls(), calls, 'the next token is not due for half an hour: no more calls');
    } finally {
      credentials.close();
    }
  });

  test('redact: known tokens, JWT shapes, access_token fields and Bearer values', () => {
    assert.equal(redact('access_token=abc.def&x=1', []).includes('abc.def'), false);
    assert.equal(redact('Bearer abcdef123', []), 'Bearer [redacted]');
    assert.equal(redact(`opaque ${'y'.repeat(30)}`, ['y'.repeat(30)]), 'opaque [redacted]');
    assert.equal(redact('ManagedIdentityCredential: Network unreachable', []), 'ManagedIdentityCredential: Network unreachable');
  });
});
