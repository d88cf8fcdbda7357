/**
 * `npm run test:compose`: the container packaging for real, with podman and podman-compose.
 * Builds the Dockerfile through compose.yml, starts redis + simulator + 3 gateway replicas + nginx
 * under a project name of its own on a free host port, then through the load balancer, with the
 * official openai SDK (AzureOpenAI):
 *   - chat completions, streaming and not, succeed and every replica serves some of them
 *     (counted from each container's JSON request log lines, matched by x-request-id);
 *   - a cooldown is shared: a 429 storm on one simulated deployment is met once, by one replica;
 *     afterwards every replica avoids that deployment and the simulator sees no more requests for it.
 * Tears everything down (`podman-compose down -v`, then by label) also when something fails.
 *
 * Not part of `npm test` (its glob is test/**\/*.test.ts). Skips when podman or podman-compose is
 * missing, unless SPILLWAY_REQUIRE_COMPOSE is set (CI), which turns the skip into a failure.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { AzureOpenAI, toFile } from 'openai';
import { freePort } from '../../shared/processes/process-set.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const STARTED = Date.now();
/** The whole file stays under 6 minutes: every wait is also bounded by this. */
const OVERALL_DEADLINE = STARTED + 330_000;
const IMAGE = 'localhost/spillway:compose-test';
const PROJECT = `spillway-test-${randomUUID().slice(0, 8)}`;
const POOL = 'gpt-4o';
const DEPLOYMENTS = ['eastus', 'swedencentral', 'westus3'];
/** The deployment the 429 storm hits (its gateway id, and its name at the simulator). */
const STORM = { id: 'swedencentral', simName: 'gpt-4o-swedencentral' };
const OTHERS = DEPLOYMENTS.filter((id) => id !== STORM.id);
/** background.probeIntervalMs as config/gateway.yaml has it (the default). */
const PROBE_INTERVAL_MS = 5000;

function installed(command: string): boolean {
  return spawnSync(command, ['--version'], { stdio: 'ignore' }).status === 0;
}

const missing = ['podman', 'podman-compose'].filter((command) => !installed(command));
const required = Boolean(process.env.SPILLWAY_REQUIRE_COMPOSE);
const skip =
  missing.length > 0 && !required
    ? `${missing.join(' and ')} not installed (set SPILLWAY_REQUIRE_COMPOSE=1 to make this a failure)`
    : false;
if (skip) process.stderr.write(`test:compose: skipped: ${skip}\n`);

// ---------------------------------------------------------------------------------------------
// Commands

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function remaining(): number {
  return OVERALL_DEADLINE - Date.now();
}

/**
 * Runs a command with a deadline (its whole process group is killed when it passes): its own, and
 * the file's overall one unless `teardown` (clean-up gets its own time even after a slow run).
 */
function run(
  command: string,
  args: string[],
  options: { timeoutMs: number; env?: NodeJS.ProcessEnv; check?: boolean; teardown?: boolean },
): Promise<Ran> {
  const timeoutMs = options.teardown ? options.timeoutMs : Math.max(1000, Math.min(options.timeoutMs, remaining()));
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: ROOT, env: options.env ?? process.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      const result = { code, stdout, stderr };
      const line = `${command} ${args.join(' ')}`;
      if (timedOut) return reject(new Error(`timed out after ${timeoutMs} ms: ${line}\n${tail(stdout + stderr)}`));
      if (options.check !== false && code !== 0) return reject(new Error(`exit ${code}: ${line}\n${tail(stdout + stderr)}`));
      resolve(result);
    });
  });
}

function tail(text: string, lines = 30): string {
  return text
    .split('\n')
    .filter((line) => !line.includes('systemd connection')) // podman without systemd: healthcheck timers
    .slice(-lines)
    .join('\n');
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Math.min(Date.now() + timeoutMs, OVERALL_DEADLINE);
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await sleep(500);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

function readEnvFile(file: string): Record<string, string> {
  if (!existsSync(file)) return {};
  const values: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const match = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (match) values[match[1]!] = match[2]!.replace(/^(['"])(.*)\1$/, '$2');
  }
  return values;
}

// ---------------------------------------------------------------------------------------------
// The stack

interface Container {
  name: string;
  service: string;
  state: string;
}

const demoEnv = readEnvFile(join(ROOT, 'config', 'demo.env'));
const CLIENT_KEY = demoEnv.SPILLWAY_CLIENT_KEY ?? '';

/** Variables compose.yml reads; set explicitly so a developer's shell cannot change the stack. */
function composeVariables(port: number): Record<string, string> {
  return {
    SPILLWAY_IMAGE: IMAGE,
    SPILLWAY_BIND: '127.0.0.1',
    SPILLWAY_PORT: String(port),
    GATEWAY_REPLICAS: '3',
    GATEWAY_CONFIG_FILE: 'gateway.yaml',
    GATEWAY_ENV_FILE: 'config/demo.env',
    LOG_LEVEL: 'info',
    SIM_TTFT_MS: '20',
    SIM_PER_TOKEN_MS: '2',
  };
}

function compose(
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
  options: { check?: boolean; teardown?: boolean } = {},
): Promise<Ran> {
  return run('podman-compose', ['-f', 'compose.yml', '-p', PROJECT, ...args], { env, timeoutMs, ...options });
}

async function projectContainers(teardown = false): Promise<Container[]> {
  const filter = `label=io.podman.compose.project=${PROJECT}`;
  const { stdout } = await run('podman', ['ps', '-a', '--filter', filter, '--format', 'json'], { timeoutMs: 20_000, teardown });
  const list = JSON.parse(stdout || '[]') as { Names: string[]; Labels: Record<string, string> | null; State: string }[];
  return list
    .map((c) => ({ name: c.Names[0]!, service: c.Labels?.['com.docker.compose.service'] ?? '?', state: c.State }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** Every JSON line a container wrote (gateway request logs, nginx access logs). */
async function jsonLogs(container: string): Promise<Record<string, unknown>[]> {
  const { stdout, stderr } = await run('podman', ['logs', container], { timeoutMs: 20_000 });
  const lines: Record<string, unknown>[] = [];
  for (const line of (stdout + '\n' + stderr).split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not JSON
    }
  }
  return lines;
}

interface Reply {
  requestId: string;
  status: number;
  deployment: string | null;
  attempts: number;
  echoedRequestId: string | null;
  content: string;
  finishReason: string | null;
}

async function chat(client: AzureOpenAI, requestId: string, stream: boolean): Promise<Reply> {
  const body = { model: POOL, messages: [{ role: 'user' as const, content: `Hello from ${requestId}` }], max_tokens: 8 };
  const options = { headers: { 'x-request-id': requestId } };
  let response: Response;
  let content = '';
  let finishReason: string | null = null;
  if (stream) {
    const result = await client.chat.completions.create({ ...body, stream: true }, options).withResponse();
    response = result.response;
    for await (const chunk of result.data) {
      for (const choice of chunk.choices) {
        content += choice.delta?.content ?? '';
        finishReason = choice.finish_reason ?? finishReason;
      }
    }
  } else {
    const result = await client.chat.completions.create(body, options).withResponse();
    response = result.response;
    content = result.data.choices[0]?.message.content ?? '';
    finishReason = result.data.choices[0]?.finish_reason ?? null;
  }
  return {
    requestId,
    status: response.status,
    deployment: response.headers.get('x-gateway-deployment'),
    attempts: Number(response.headers.get('x-gateway-attempts')),
    echoedRequestId: response.headers.get('x-request-id'),
    content,
    finishReason,
  };
}

async function inBatches<T>(count: number, concurrency: number, task: (index: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array<T>(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const index = next++;
        results[index] = await task(index);
      }
    }),
  );
  return results;
}

function assertServed(reply: Reply, allowed: readonly string[]): void {
  assert.equal(reply.status, 200, `${reply.requestId}: status`);
  assert.equal(reply.echoedRequestId, reply.requestId, `${reply.requestId}: x-request-id passes through nginx and back`);
  assert.ok(
    reply.deployment && allowed.includes(reply.deployment),
    `${reply.requestId}: x-gateway-deployment ${reply.deployment} not in ${allowed.join(', ')}`,
  );
  assert.ok(reply.content.length > 0, `${reply.requestId}: some content`);
  assert.ok(reply.finishReason, `${reply.requestId}: a finish_reason`);
}

/** Which gateway container logged the request line of each request id. */
async function servedBy(gateways: Container[], requestIds: readonly string[]): Promise<Map<string, string>> {
  const wanted = new Set(requestIds);
  return until(`request log lines for ${requestIds.length} requests`, 20_000, async () => {
    const found = new Map<string, string>();
    for (const gateway of gateways) {
      for (const line of await jsonLogs(gateway.name)) {
        if (line.message === 'request' && typeof line.requestId === 'string' && wanted.has(line.requestId)) {
          assert.ok(!found.has(line.requestId), `${line.requestId} logged by two replicas`);
          found.set(line.requestId, gateway.name);
        }
      }
    }
    return found.size === wanted.size ? found : undefined;
  });
}

function note(message: string): void {
  process.stderr.write(`test:compose: ${message} (${((Date.now() - STARTED) / 1000).toFixed(0)} s)\n`);
}

function countBy(values: Iterable<string>): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const value of values) counts[value] = (counts[value] ?? 0) + 1;
  return counts;
}

// ---------------------------------------------------------------------------------------------

describe('compose stack: 3 gateway replicas behind nginx, one Redis, the simulator', { skip, timeout: 350_000 }, () => {
  let env: NodeJS.ProcessEnv;
  let lbUrl = '';
  let simUrl = '';
  let gateways: Container[] = [];
  let client: AzureOpenAI;
  let upStarted = false;
  let failed = false;
  /** Marks the run as failed (for the diagnostics in `after`) and rethrows. */
  const noting =
    (body: () => Promise<void>): (() => Promise<void>) =>
    async () => {
      try {
        await body();
      } catch (error) {
        failed = true;
        throw error;
      }
    };

  before(
    noting(async () => {
      assert.deepEqual(
        missing,
        [],
        `SPILLWAY_REQUIRE_COMPOSE is set but ${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} not installed (run ../shared/containers/setup.sh)`,
      );
      assert.ok(CLIENT_KEY, 'config/demo.env defines SPILLWAY_CLIENT_KEY');
      const variables = composeVariables(await freePort());
      // podman-compose 1.0.x lets ./.env override the process environment (Docker Compose does the opposite).
      const dotenv = readEnvFile(join(ROOT, '.env'));
      const clashes = Object.keys(variables).filter((key) => key in dotenv && dotenv[key] !== variables[key]);
      assert.deepEqual(
        clashes,
        [],
        `./.env sets ${clashes.join(', ')}, which podman-compose would let override this test's values: move .env aside`,
      );
      env = { ...process.env, ...variables, BUILDAH_FORMAT: 'docker' };

      // Build the real Dockerfile through compose.yml's build section (docker format keeps HEALTHCHECK).
      note(`building ${IMAGE} from the Dockerfile (project ${PROJECT}, lb on port ${variables.SPILLWAY_PORT})`);
      await compose(['build', 'gateway'], env, 240_000);
      note('built');
      const { stdout } = await run('podman', ['image', 'inspect', IMAGE, '--format', '{{json .Config}}'], { timeoutMs: 20_000 });
      const image = JSON.parse(stdout) as { User?: string; Entrypoint?: string[]; Env?: string[] };
      assert.equal(image.User, 'node', 'the image runs as the node user');
      assert.deepEqual(image.Entrypoint, ['node', 'dist/gateway/main.js'], 'exec-form entrypoint');
      assert.ok(image.Env?.includes('NODE_ENV=production'), 'NODE_ENV=production');
      const health = await run('podman', ['image', 'inspect', IMAGE, '--format', '{{json .HealthCheck}}'], { timeoutMs: 20_000 });
      assert.match(health.stdout, /healthz/, 'the image carries its HEALTHCHECK');

      // `up lb` starts lb and what it depends on (redis, simulator, gateway × deploy.replicas), not k6.
      upStarted = true;
      await compose(['up', '-d', 'lb'], env, 120_000);
      const containers = await projectContainers();
      assert.deepEqual(
        countBy(containers.map((c) => c.service)),
        { gateway: 3, lb: 1, redis: 1, simulator: 1 },
        `containers: ${containers.map((c) => `${c.name} (${c.state})`).join(', ')}`,
      );
      gateways = containers.filter((c) => c.service === 'gateway');
      note(`started ${containers.map((c) => c.name).join(', ')}`);

      // Health: podman runs healthchecks from systemd timers, absent here, so run each one ourselves.
      for (const container of containers.filter((c) => c.service !== 'lb')) {
        await until(`${container.name} to pass its healthcheck`, 60_000, async () => {
          const result = await run('podman', ['healthcheck', 'run', container.name], { timeoutMs: 15_000, check: false });
          return result.code === 0 ? true : undefined;
        });
      }
      lbUrl = `http://127.0.0.1:${variables.SPILLWAY_PORT}`;
      await until('the load balancer to answer /readyz', 30_000, async () => ((await fetch(`${lbUrl}/readyz`)).ok ? true : undefined));

      const simulator = containers.find((c) => c.service === 'simulator')!;
      const port = await run('podman', ['port', simulator.name, '9000/tcp'], { timeoutMs: 20_000 });
      const hostPort = /:(\d+)\s*$/.exec(port.stdout.trim())?.[1];
      assert.ok(hostPort, `the simulator's control port is published: ${port.stdout}`);
      simUrl = `http://127.0.0.1:${hostPort}`;
      note('every healthcheck passes; the lb answers');

      client = new AzureOpenAI({
        endpoint: lbUrl,
        apiKey: CLIENT_KEY,
        apiVersion: '2024-10-21',
        deployment: POOL,
        maxRetries: 0,
        timeout: 30_000,
      });
    }),
  );

  after(async () => {
    if (!upStarted || !env) return;
    const teardown = { check: false, teardown: true };
    const containers = await projectContainers(true).catch(() => []);
    if (failed) {
      // What the containers said, before they are gone.
      for (const container of containers) {
        const logs = await run('podman', ['logs', '--tail', '15', container.name], { timeoutMs: 15_000, ...teardown }).catch(
          () => undefined,
        );
        process.stderr.write(`--- ${container.name} (${container.state})\n${tail((logs?.stdout ?? '') + (logs?.stderr ?? ''), 15)}\n`);
      }
    }
    if (process.env.SPILLWAY_COMPOSE_KEEP) {
      process.stderr.write(`test:compose: SPILLWAY_COMPOSE_KEEP is set: project ${PROJECT} left running\n`);
      return;
    }
    // Give the gateways their drain time (podman-compose 1.0.x `down` stops with -t 1), then remove.
    if (containers.length > 0)
      await run('podman', ['stop', '-t', '10', ...containers.map((c) => c.name)], { timeoutMs: 40_000, ...teardown }).catch(
        () => undefined,
      );
    await compose(['down', '-v'], env, 60_000, teardown).catch(() => undefined);
    // podman-compose 1.0.x removes neither containers beyond deploy.replicas nor the network.
    const left = await projectContainers(true).catch(() => []);
    if (left.length > 0)
      await run('podman', ['rm', '-f', '-v', ...left.map((c) => c.name)], { timeoutMs: 30_000, ...teardown }).catch(() => undefined);
    await run('podman', ['network', 'rm', '-f', `${PROJECT}_default`], { timeoutMs: 20_000, ...teardown }).catch(() => undefined);
    assert.deepEqual(await projectContainers(true), [], 'every container of the test project is gone');
    note('torn down');
  });

  test(
    'chat completions through nginx reach every replica, streaming and not',
    { timeout: 90_000 },
    noting(async () => {
      const ids = Array.from({ length: 30 }, (_, i) => `spread-${PROJECT}-${i}`);
      const replies = await inBatches(ids.length, 6, (i) => chat(client, ids[i]!, i % 2 === 1));
      for (const reply of replies) assertServed(reply, DEPLOYMENTS);
      assert.ok(
        replies.every((r) => r.attempts === 1),
        'no failover needed',
      );
      const byReplica = countBy((await servedBy(gateways, ids)).values());
      assert.deepEqual(
        Object.keys(byReplica).sort(),
        gateways.map((g) => g.name).sort(),
        `requests per replica: ${JSON.stringify(byReplica)}`,
      );
    }),
  );

  test(
    "a body over the gateway's limit gets its Azure-shaped 413 through nginx, not nginx's page",
    { timeout: 30_000 },
    noting(async () => {
      // 5 MiB: over the gateway's 4 MiB maxBodyBytes, under nginx's client_max_body_size.
      const content = 'x'.repeat(5 * 1024 * 1024);
      const response = await fetch(`${lbUrl}/openai/deployments/${POOL}/chat/completions?api-version=2024-10-21`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'api-key': CLIENT_KEY },
        body: JSON.stringify({ messages: [{ role: 'user', content }] }),
        signal: AbortSignal.timeout(20_000),
      });
      assert.equal(response.status, 413);
      assert.match(response.headers.get('content-type') ?? '', /application\/json/);
      assert.equal(((await response.json()) as { error: { code: string } }).error.code, 'RequestEntityTooLarge');
    }),
  );

  test(
    'a Batch API batch uploaded through nginx runs on the replicas’ lanes to completion',
    { timeout: 90_000 },
    noting(async () => {
      const lines = Array.from({ length: 6 }, (_, i) =>
        JSON.stringify({
          custom_id: `line-${i}`,
          method: 'POST',
          url: '/chat/completions',
          body: { model: POOL, messages: [{ role: 'user', content: `batch line ${i}` }], max_tokens: 10 },
        }),
      );
      const file = await client.files.create({ file: await toFile(Buffer.from(lines.join('\n')), 'lines.jsonl'), purpose: 'batch' });
      const created = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
      const batch = await until('the batch completed', 60_000, async () => {
        const current = await client.batches.retrieve(created.id);
        if (current.status === 'completed') return current;
        assert.ok(['validating', 'in_progress', 'finalizing'].includes(current.status), `status ${current.status}`);
        return undefined;
      });
      assert.deepEqual(batch.request_counts, { total: 6, completed: 6, failed: 0 });
      const output = (await (await client.files.content(batch.output_file_id!)).text()).trim().split('\n');
      const results = output.map((line) => JSON.parse(line) as { custom_id: string; response: { status_code: number } });
      assert.deepEqual(
        results.map((r) => [r.custom_id, r.response.status_code]),
        lines.map((_, i) => [`line-${i}`, 200]),
      );
    }),
  );

  test(
    'a cooldown learnt by one replica is honoured by all of them (shared Redis)',
    { timeout: 120_000 },
    noting(async () => {
      const control = async (path: string, body?: unknown) => {
        const response = await fetch(`${simUrl}${path}`, {
          method: body === undefined ? 'GET' : 'POST',
          headers: { 'content-type': 'application/json' },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(10_000),
        });
        assert.equal(response.status, 200, `${path}: ${response.status}`);
        return (await response.json()) as Record<string, unknown>;
      };
      const stormStats = async () => (await control(`/_sim/stats?deployment=${STORM.simName}`)) as { received: number; throttled: number };

      await control('/_sim/reset', {});
      // Retry-After 120 s: a per-minute throttle (not quota exhaustion), far longer than this test.
      await control('/_sim/faults', { deployment: STORM.simName, fault: { kind: 'storm-429', retryAfterMs: 120_000 } });

      // One request at a time until one lands on the storm: it fails over and still succeeds.
      let hit: Reply | undefined;
      for (let i = 0; i < 60 && !hit; i++) {
        const reply = await chat(client, `probe-${PROJECT}-${i}`, false);
        assertServed(reply, OTHERS);
        if (reply.attempts > 1) hit = reply;
      }
      assert.ok(hit, 'some request met the 429 storm within 60 requests');
      const hitAt = performance.now();
      assert.deepEqual(await stormStats().then((s) => [s.received, s.throttled]), [1, 1], 'the storm deployment saw exactly one request');
      const origin = (await servedBy(gateways, [hit.requestId])).get(hit.requestId)!;

      // Every replica now reads the cooldown from Redis (asked inside each container, admin API).
      for (const gateway of gateways) {
        const script = `fetch('http://127.0.0.1:8080/admin/pools',{headers:{'api-key':process.env.ADMIN_API_KEY}}).then(r=>r.text()).then(t=>process.stdout.write(t))`;
        const { stdout } = await run('podman', ['exec', gateway.name, 'node', '-e', script], { timeoutMs: 20_000 });
        const pools = JSON.parse(stdout) as { pools: Record<string, { deployments: { id: string; cooldownUntil: number }[] }> };
        const cooling = pools.pools[POOL]!.deployments.filter((d) => d.cooldownUntil > Date.now()).map((d) => d.id);
        assert.deepEqual(cooling, [STORM.id], `${gateway.name} sees the cooldown`);
      }

      // Then traffic through every replica avoids it, at the first attempt, streaming and not.
      const ids = Array.from({ length: 45 }, (_, i) => `after-${PROJECT}-${i}`);
      const replies = await inBatches(ids.length, 3, (i) => chat(client, ids[i]!, i % 2 === 0));
      for (const reply of replies) {
        assertServed(reply, OTHERS);
        assert.equal(reply.attempts, 1, `${reply.requestId}: went straight to a deployment that is not cooling down`);
      }
      // Nothing more but the cluster-wide prober's probes: a 120 s cooldown is a long one, probed at most
      // once per background.probeIntervalMs (5 s in config/gateway.yaml's defaults) while it lasts.
      const probesAtMost = Math.ceil((performance.now() - hitAt) / PROBE_INTERVAL_MS) + 1;
      const stormAfter = (await stormStats()).received - 1;
      assert.ok(stormAfter <= probesAtMost, `the storm deployment received ${stormAfter} more, above the prober's ${probesAtMost}`);

      const byReplica = countBy((await servedBy(gateways, ids)).values());
      assert.deepEqual(
        Object.keys(byReplica).sort(),
        gateways.map((g) => g.name).sort(),
        `requests per replica after the 429: ${JSON.stringify(byReplica)}`,
      );
      // The other replicas never saw a 429 themselves: what they avoided, they learnt from Redis.
      for (const gateway of gateways.filter((g) => g.name !== origin)) {
        const throttled = (await jsonLogs(gateway.name)).filter((l) => l.message === 'deployment throttled: cooling down');
        assert.deepEqual(throttled, [], `${gateway.name} met no 429 itself`);
      }
    }),
  );
});
