/**
 * Local load driver: runs one scenario of loadtest/scenarios/ on this machine.
 *
 *   npm run loadtest -- --scenario steady-chat [--gateways 3] [--duration 20s] [--json out.json]
 *
 * Starts, all on loopback and as children of this process: a private redis-server, the AOAI
 * simulator with the scenario's deployments (budgets, latency model), N gateway processes
 * (gateway/main.ts, generated YAML config, REDIS_URL, LOG_LEVEL=warn so that the per-request info
 * log stays off the hot path), nginx in front of them, and the load generator (a separate process,
 * open-model arrivals). Prints a summary, writes JSON to loadtest/results/, checks the scenario's
 * thresholds (exit code 99 when one fails, like k6), and stops every child on the way out.
 *
 * A scenario with a `chaos` schedule (scenarios/chaos.json) also runs the chaos phase beside the
 * load (loadtest/chaos/): Redis killed and frozen, a gateway killed, deployment faults on and off;
 * then the client-visible outcome per event, what the deployments received, the in-flight drift,
 * printed, in the JSON, and in docs/chaos.md (unless --no-doc).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { configSchema } from '../shared/config/schema.ts';
import type { DeploymentStats, SimDeployment } from '../shared/simulator/types.ts';
import { chaosTailMs, startChaosPhase, type ChaosPhase } from './chaos/phase.ts';
import { writeChaosDoc, type ChaosReport } from './chaos/report.ts';
import { checkPlan, planChaos, type ChaosPlan } from './chaos/schedule.ts';
import { fmt, pct, statusLine, textTable } from './lib/format.ts';
import { ProcessSet } from '../shared/processes/process-set.ts';
import { childPids, cpuMs, cpuMsOf, memoryMb } from '../shared/processes/proc-stats.ts';
import type { PreparedRequest, RunResult, RunSpec } from './lib/protocol.ts';
import {
  listScenarios,
  loadScenario,
  parseDuration,
  requestBody,
  scaleStages,
  simDeploymentName,
  type Scenario,
  type Stage,
} from './lib/scenario.ts';
import {
  CLIENT_KEY,
  gatewayConfig,
  makeWorkDir,
  NGINX_MISSING,
  nginxBinary,
  REPO_ROOT,
  startGateway,
  startGenerator,
  startNginx,
  startRedis,
  startSimulatorProcess,
  sumStats,
  writeGatewayConfig,
  type GatewayHandle,
  type GatewayOptions,
  type GatewayPoolInput,
  type Generator,
  type NginxHandle,
  type RedisHandle,
  type SimulatorHandle,
} from './lib/stack.ts';

const HELP = `Local load driver

  npm run loadtest -- --scenario NAME [options]

  --scenario NAME      one of: ${listScenarios().join(', ')} (or a path to a scenario .json)
  --gateways N         gateway processes behind nginx (default: the scenario's local.gateways)
  --duration D         stretch/shrink the stages to this total, e.g. 10s, 2m (default: as written)
  --rate-factor F      multiply every arrival rate by F (default 1)
  --max-requests N     hard bound on requests sent (default: the scenario's local.maxRequests)
  --memory             one gateway with the in-memory store, no Redis (implies --gateways 1)
  --no-lb              no nginx: the load goes to the first gateway (only with one gateway)
  --nginx-workers N    nginx worker_processes (default 1)
  --log-level L        the gateways' LOG_LEVEL (default warn; info logs one JSON line per request)
  --json FILE          also write the result here (always written to loadtest/results/)
  --no-doc             a chaos scenario: do not rewrite the results section of docs/chaos.md
  --results-dir DIR    where the JSON goes (default loadtest/results)
  --help               this text

Exit codes: 0 thresholds passed, 99 a threshold failed (as k6), 2 setup or run failure, 3 nginx missing.
`;

/** One smoke request may take this long (the stack answers in milliseconds once it is up). */
const SMOKE_TIMEOUT_MS = 10_000;

interface Check {
  name: string;
  limit: string;
  actual: string;
  pass: boolean | null;
}

function evaluate(scenario: Scenario, result: RunResult): Check[] {
  const t = scenario.thresholds;
  const checks: Check[] = [
    { name: 'error rate', limit: `< ${pct(t.maxErrorRate)}`, actual: pct(result.errorRate), pass: result.errorRate < t.maxErrorRate },
  ];
  const p95 = (summary: { p95: number } | null | undefined) => summary?.p95;
  const add = (name: string, limit: number | undefined, actual: number | undefined) => {
    if (limit === undefined) return;
    checks.push({
      name,
      limit: `< ${limit} ms`,
      actual: actual === undefined ? 'no samples' : `${fmt(actual)} ms`,
      pass: actual === undefined ? null : actual < limit,
    });
  };
  add('p95 latency (200)', t.p95LatencyMs, p95(result.latencyByStatus['200']));
  add('p95 TTFT (streams)', t.p95TtftMs, p95(result.ttft));
  add('p95 latency (429)', t.p95ThrottledLatencyMs, p95(result.latencyByStatus['429']));
  if (t.retryAfterOn429)
    checks.push({
      name: '429 with retry-after',
      limit: 'all',
      actual: `${result.retryAfterMissing} missing`,
      pass: result.retryAfterMissing === 0,
    });
  return checks;
}

/** The timeline folded into at most `rows` rows. */
function timelineRows(result: RunResult, rows = 12): string[][] {
  const points = result.timeline;
  const step = Math.max(1, Math.ceil(points.length / rows));
  const out: string[][] = [];
  for (let start = 0; start < points.length; start += step) {
    const slice = points.slice(start, start + step);
    const seconds = slice.length;
    const sum = (key: 'sent' | 'ok200' | 'throttled' | 'errors') => slice.reduce((acc, p) => acc + p[key], 0);
    const p95s = slice.map((p) => p.p95).filter((v): v is number => v !== null);
    out.push([
      `${start}-${start + seconds}s`,
      fmt(sum('sent') / seconds),
      fmt(sum('ok200') / seconds),
      fmt(sum('throttled') / seconds),
      fmt(sum('errors') / seconds),
      p95s.length ? fmt(Math.max(...p95s), 0) : '–',
    ]);
  }
  return out;
}

const log = (line: string) => process.stdout.write(`${line}\n`);

interface DriverOptions {
  scenario: Scenario;
  memory: boolean;
  gateways: number;
  useLb: boolean;
  nginxWorkers: number;
  rateFactor: number;
  stages: Stage[];
  loadMs: number;
  requestTimeoutMs: number;
  drainMs: number;
  maxRequests: number;
  logLevel: string;
  json: string | undefined;
  /** The scenario's chaos schedule, scaled like the stages; undefined without one. */
  chaos: ChaosPlan | undefined;
  /** Write docs/chaos.md's results (chaos runs). */
  doc: boolean;
  resultsDir: string;
  /** The gateways' `gateway:` settings (the scenario's local.gateway) and the leaseMs they give. */
  gatewaySettings: Record<string, unknown> | undefined;
  leaseMs: number;
}

/** The options, or the exit code when the run stops here (--help, no scenario, nginx missing). */
function parseOptions(): DriverOptions | number {
  const { values } = parseArgs({
    options: {
      scenario: { type: 'string' },
      gateways: { type: 'string' },
      duration: { type: 'string' },
      'rate-factor': { type: 'string' },
      'max-requests': { type: 'string' },
      memory: { type: 'boolean' },
      'no-lb': { type: 'boolean' },
      'nginx-workers': { type: 'string' },
      'log-level': { type: 'string' },
      json: { type: 'string' },
      'no-doc': { type: 'boolean' },
      'results-dir': { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help || !values.scenario) {
    process.stdout.write(HELP);
    return values.help ? 0 : 2;
  }
  const scenario = loadScenario(values.scenario);
  const memory = values.memory ?? false;
  const gateways = memory ? 1 : values.gateways ? Number(values.gateways) : scenario.local.gateways;
  if (!Number.isInteger(gateways) || gateways < 1 || gateways > 16) throw new Error('--gateways must be 1..16');
  const useLb = !values['no-lb'];
  if (!useLb && gateways !== 1) throw new Error('--no-lb needs a single gateway');
  if (useLb && !nginxBinary()) {
    process.stderr.write(`${NGINX_MISSING}\n`);
    return 3;
  }
  const rateFactor = values['rate-factor'] ? Number(values['rate-factor']) : 1;
  const stages = scaleStages(scenario.load.stages, values.duration ? parseDuration(values.duration) : undefined, rateFactor);
  const requestTimeoutMs = parseDuration(scenario.load.requestTimeout);
  const writtenMs = scenario.load.stages.reduce((acc, s) => acc + parseDuration(s.duration), 0);
  const chaos = planChaos(
    scenario,
    values.duration ? parseDuration(values.duration) / writtenMs : 1,
    stages.reduce((acc, s) => acc + s.durationMs, 0),
  );
  if (chaos) checkPlan(chaos, { redis: !memory, gateways, loadBalancer: useLb });
  const gatewaySettings = scenario.local.gateway;
  // The effective leaseMs, with the gateway's own defaults (and the settings checked before anything starts).
  const leaseMs = configSchema.parse(gatewayConfig('http://127.0.0.1:1', deploymentsOf(scenario).pools, gatewaySettings)).gateway.leaseMs;
  return {
    scenario,
    memory,
    gateways,
    useLb,
    nginxWorkers: values['nginx-workers'] ? Number(values['nginx-workers']) : 1,
    rateFactor,
    stages,
    loadMs: stages.reduce((acc, s) => acc + s.durationMs, 0),
    requestTimeoutMs,
    drainMs: Math.min(requestTimeoutMs, 60_000),
    maxRequests: values['max-requests'] ? Number(values['max-requests']) : scenario.local.maxRequests,
    logLevel: values['log-level'] ?? 'warn',
    json: values.json,
    chaos,
    doc: !values['no-doc'],
    resultsDir: values['results-dir'] ? resolve(values['results-dir']) : join(REPO_ROOT, 'loadtest', 'results'),
    gatewaySettings,
    leaseMs,
  };
}

/** The scenario's simulated deployments and the gateway pools that point at them. */
function deploymentsOf(scenario: Scenario): { simDeployments: SimDeployment[]; pools: Record<string, GatewayPoolInput> } {
  const simDeployments: SimDeployment[] = [];
  const pools: Record<string, GatewayPoolInput> = {};
  for (const [poolName, pool] of Object.entries(scenario.local.pools)) {
    pools[poolName] = { ...(pool.strategy ? { strategy: pool.strategy } : {}), deployments: [] };
    for (const d of pool.deployments) {
      const name = simDeploymentName(poolName, d.id);
      simDeployments.push({
        name,
        ...(d.model ? { model: d.model } : {}),
        ...(d.tpm ? { tpm: d.tpm } : {}),
        ...(d.rpm ? { rpm: d.rpm } : {}),
        ...(d.region ? { region: d.region } : {}),
        ...(d.latency ? { latency: d.latency } : {}),
        completionTokens: d.completionTokens ?? scenario.local.completionTokens,
      });
      pools[poolName].deployments.push({
        id: d.id,
        deployment: name,
        ...(d.tpm ? { tpm: d.tpm } : {}),
        ...(d.rpm ? { rpm: d.rpm } : {}),
        ...(d.priority ? { priority: d.priority } : {}),
        ...(d.weight ? { weight: d.weight } : {}),
      });
    }
  }
  return { simDeployments, pools };
}

interface Stack {
  redis: RedisHandle | undefined;
  simulator: SimulatorHandle;
  gateways: GatewayHandle[];
  nginx: NginxHandle | undefined;
  /** Where the load goes: nginx, or the one gateway with --no-lb. */
  target: string;
  generator: Generator;
  /** The work directory, and how each gateway was started (a chaos event restarts one the same way). */
  dir: string;
  gatewayOptions: GatewayOptions[];
}

/** The gateways' admin key in a chaos run (GET /admin/pools reads their in-flight counts); new per run. */
const ADMIN_KEY = `loadtest-admin-${randomBytes(8).toString('hex')}`;

/** Redis (unless --memory), the simulator, the gateways, nginx (unless --no-lb) and the load generator. */
async function startStack(processes: ProcessSet, options: DriverOptions): Promise<Stack> {
  const dir = makeWorkDir(processes);
  const { simDeployments, pools } = deploymentsOf(options.scenario);
  const redis = options.memory ? undefined : await startRedis(processes, dir);
  const simulator = await startSimulatorProcess(processes, dir, {
    deployments: simDeployments,
    windowMs: options.scenario.local.windowMs,
    latency: options.scenario.local.latency,
  });
  const configFile = writeGatewayConfig(dir, 'gateway', gatewayConfig(simulator.url, pools, options.gatewaySettings));
  const { logLevel } = options;
  const gatewayOptions: GatewayOptions[] = Array.from({ length: options.gateways }, (_, index) => ({
    name: `gateway-${index + 1}`,
    configFile,
    ...(redis ? { redisUrl: redis.url } : {}),
    logLevel,
    ...(options.chaos ? { env: { ADMIN_API_KEY: ADMIN_KEY } } : {}),
  }));
  const gateways: GatewayHandle[] = await Promise.all(gatewayOptions.map((o) => startGateway(processes, dir, o)));
  const nginx = options.useLb
    ? await startNginx(
        processes,
        dir,
        'nginx',
        gateways.map((g) => g.port),
        options.nginxWorkers,
      )
    : undefined;
  const target = nginx?.url ?? gateways[0]!.url;
  const generator = await startGenerator(processes);
  log(
    `stack: ${options.gateways} gateway(s) [${gateways.map((g) => g.port).join(', ')}] ${redis ? `with Redis ${redis.url}` : 'with the in-memory store'}` +
      `${nginx ? `, nginx ${nginx.url}` : ''}, simulator ${simulator.url} (${simDeployments.length} deployments), LOG_LEVEL=${logLevel}`,
  );
  return { redis, simulator, gateways, nginx, target, generator, dir, gatewayOptions };
}

function scenarioRequests(scenario: Scenario): PreparedRequest[] {
  return scenario.requests.map((spec) => ({
    name: spec.name,
    path: `/openai/deployments/${encodeURIComponent(spec.pool)}/${spec.operation}?api-version=${scenario.apiVersion}`,
    body: requestBody(spec),
    stream: spec.stream,
    weight: spec.weight,
  }));
}

/** One request of each kind must succeed before the load starts. */
async function smokeTest(target: string, requests: PreparedRequest[]): Promise<void> {
  for (const request of requests) {
    const response = await fetch(`${target}${request.path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': CLIENT_KEY },
      body: request.body,
      // A stack that does not answer fails the smoke, not the hard cap.
      signal: AbortSignal.timeout(SMOKE_TIMEOUT_MS),
    });
    const text = await response.text();
    if (response.status !== 200) throw new Error(`smoke request '${request.name}' got ${response.status}: ${text.slice(0, 300)}`);
  }
}

function loadSpec(options: DriverOptions, target: string, requests: PreparedRequest[]): RunSpec {
  const { scenario, stages } = options;
  const startRate = scenario.load.startRate * options.rateFactor;
  const peak = Math.max(startRate, ...stages.map((s) => s.target));
  log(
    `load: ${stages.map((s) => `${fmt(s.durationMs / 1000)}s→${s.target}/s`).join(', ')} (peak ${peak}/s, max ${scenario.load.maxVUs} in flight, max ${options.maxRequests} requests)`,
  );
  return {
    baseUrl: target,
    apiKey: CLIENT_KEY,
    requests,
    mode: { kind: 'open', startRate, stages, maxInFlight: scenario.load.maxVUs },
    maxRequests: options.maxRequests,
    requestTimeoutMs: options.requestTimeoutMs,
    drainMs: options.drainMs,
    okStatuses: scenario.thresholds.okStatuses ?? [200],
    ...(options.chaos ? { recordArrivals: true } : {}),
  };
}

interface CpuUse {
  gateways: number;
  nginx: number;
  simulator: number;
  redis: number;
}

/** The stack's CPU so far, ms per kind of process (nginx's workers as they were when the load began). */
function cpuOf(stack: Stack, nginxPids: number[]): CpuUse {
  return {
    gateways: cpuMsOf(stack.gateways.map((g) => g.child.pid)),
    nginx: cpuMsOf(nginxPids),
    simulator: cpuMs(stack.simulator.child.pid),
    redis: stack.redis ? cpuMs(stack.redis.child.pid) : 0,
  };
}

/** The load itself, with progress every 5 s and the stack's CPU around it. */
async function runLoad(stack: Stack, spec: RunSpec): Promise<{ result: RunResult; cpu: CpuUse }> {
  const nginxPids = stack.nginx ? [stack.nginx.child.pid, ...childPids(stack.nginx.child.pid)] : [];
  const before = cpuOf(stack, nginxPids);
  let lastPrinted = 0;
  const result = await stack.generator.run(spec, (p) => {
    if (p.elapsedMs - lastPrinted >= 5000) {
      lastPrinted = p.elapsedMs;
      log(`  ${fmt(p.elapsedMs / 1000, 0)}s: sent ${p.sent}, completed ${p.completed}, in flight ${p.inFlight}, errors ${p.errors}`);
    }
  });
  const after = cpuOf(stack, nginxPids);
  const cpu = {
    gateways: after.gateways - before.gateways,
    nginx: after.nginx - before.nginx,
    simulator: after.simulator - before.simulator,
    redis: stack.redis ? after.redis - before.redis : 0,
  };
  return { result, cpu };
}

interface Collected {
  result: RunResult;
  cpu: CpuUse;
  /** False when processes were killed and restarted during the load (a chaos run): the CPU figures do not add up then. */
  cpuComparable: boolean;
  memoryByGateway: { name: string; rss: number; peak: number }[];
  upstreamByDeployment: Record<string, DeploymentStats>;
  upstream: DeploymentStats;
  checks: Check[];
}

/** After the load: the gateways' memory, the simulator's counts, the thresholds. */
async function collect(stack: Stack, scenario: Scenario, run: { result: RunResult; cpu: CpuUse }, chaos = false): Promise<Collected> {
  const memoryByGateway = stack.gateways.map((g) => ({ name: g.name, ...memoryMb(g.child.pid) }));
  const upstreamByDeployment = await stack.simulator.stats();
  const upstream = sumStats(upstreamByDeployment);
  return { ...run, cpuComparable: !chaos, memoryByGateway, upstreamByDeployment, upstream, checks: evaluate(scenario, run.result) };
}

const summaryLine = (s: { p50: number; p95: number; p99: number; max: number } | null | undefined) =>
  s ? `p50 ${fmt(s.p50)}  p95 ${fmt(s.p95)}  p99 ${fmt(s.p99)}  max ${fmt(s.max)} ms` : '–';

/** The summary table's rows. */
function summaryRows(c: Collected, okStatuses: number[]): string[][] {
  const { result, cpu, upstream } = c;
  const l429 = result.latencyByStatus['429'];
  const perReq = (ms: number) => (result.completed ? `${fmt(ms / result.completed, 2)} ms/request` : '–');
  const peakConcurrency = Math.max(...Object.values(c.upstreamByDeployment).map((s) => s.peakConcurrency));
  return [
    [
      'requests',
      `sent ${result.sent}, completed ${result.completed}, dropped (max in flight) ${result.dropped}, unfinished ${result.unfinished}${result.capped ? ' (request cap hit)' : ''}`,
    ],
    ['duration', `${fmt(result.loadMs / 1000)} s load + ${fmt(result.drainMs / 1000)} s drain`],
    ['throughput', `${fmt(result.rps)} rps completed, ${fmt(((result.statuses['200'] ?? 0) / result.loadMs) * 1000)} rps served (200)`],
    ['error rate', `${pct(result.errorRate)} (not in [${okStatuses.join(', ')}], transport errors, broken 2xx bodies and streams)`],
    ['statuses', statusLine(result.statuses)],
    [
      'outcomes',
      `${statusLine(Object.fromEntries(Object.entries(result.outcomes).filter(([, n]) => n > 0)))} (broken: a 2xx whose body or stream did not complete)`,
    ],
    ['latency 200', summaryLine(result.latencyByStatus['200'])],
    ['TTFT streams', summaryLine(result.ttft)],
    [
      'latency 429',
      l429 ? `p50 ${fmt(l429.p50)}  p95 ${fmt(l429.p95)}  p99 ${fmt(l429.p99)} ms; without retry-after: ${result.retryAfterMissing}` : '–',
    ],
    [
      'upstream',
      `received ${upstream.received}, served ${upstream.served}, 429 ${upstream.throttled}, failed ${upstream.failed}, aborted ${upstream.aborted}, peak concurrency/deployment ≤ ${peakConcurrency}`,
    ],
    ...(c.cpuComparable
      ? [
          [
            'CPU gateways',
            `${fmt(cpu.gateways, 0)} ms (${perReq(cpu.gateways)}, incl. JIT warm-up of fresh processes: short runs overstate it; npm run bench measures it warm); RSS ${c.memoryByGateway.map((m) => `${fmt(m.rss, 0)}`).join('/')} MB`,
          ],
          [
            'CPU others',
            `nginx ${fmt(cpu.nginx, 0)} ms, simulator ${fmt(cpu.simulator, 0)} ms, redis ${fmt(cpu.redis, 0)} ms, generator ${result.generatorCpuMs} ms`,
          ],
        ]
      : [['CPU', `not comparable: processes were killed and restarted during the load; generator ${result.generatorCpuMs} ms`]]),
    [
      'schedule lag',
      result.lag
        ? `p50 ${fmt(result.lag.p50)}  p99 ${fmt(result.lag.p99)}  max ${fmt(result.lag.max)} ms (the generator's lateness; large = the machine is saturated)`
        : '–',
    ],
  ];
}

function printReport(scenario: Scenario, c: Collected, okStatuses: number[]): void {
  const { result } = c;
  log('');
  log(textTable(['', scenario.name], summaryRows(c, okStatuses)));
  if (Object.keys(result.byRequest).length > 1) {
    log('');
    log(
      textTable(
        ['request', 'count', 'errors', 'p50 ms', 'p95 ms', 'p99 ms', 'TTFT p95'],
        Object.entries(result.byRequest).map(([name, b]) => [
          name,
          String(b.count),
          String(b.errors),
          fmt(b.latency?.p50),
          fmt(b.latency?.p95),
          fmt(b.latency?.p99),
          fmt(b.ttft?.p95),
        ]),
      ),
    );
  }
  log('');
  log(textTable(['window', 'sent/s', '200/s', '429/s', 'errors/s', 'p95 ms'], timelineRows(result)));
  log('');
  log(
    textTable(
      ['threshold', 'limit', 'actual', 'result'],
      c.checks.map((check) => [check.name, check.limit, check.actual, check.pass === null ? 'n/a' : check.pass ? 'PASS' : 'FAIL']),
    ),
  );
}

/** The run as JSON in the results directory (and --json FILE); returns the file. The chaos report replaces the raw arrivals. */
function writeResult(options: DriverOptions, stack: Stack, c: Collected, chaos: ChaosReport | undefined): string {
  const { scenario, stages, maxRequests, rateFactor, logLevel } = options;
  const output = {
    scenario: scenario.name,
    at: new Date().toISOString(),
    setup: {
      gateways: options.gateways,
      store: stack.redis ? 'redis' : 'memory',
      nginx: Boolean(stack.nginx),
      logLevel,
      stages,
      maxRequests,
      rateFactor,
    },
    result: { ...c.result, arrivals: undefined },
    upstream: { total: c.upstream, byDeployment: c.upstreamByDeployment },
    cpuMs: c.cpu,
    memoryMb: c.memoryByGateway,
    thresholds: c.checks,
    ...(chaos ? { chaos } : {}),
  };
  mkdirSync(options.resultsDir, { recursive: true });
  const file = join(options.resultsDir, `${scenario.name}-${output.at.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(output, null, 2));
  if (options.json) writeFileSync(resolve(options.json), JSON.stringify(output, null, 2));
  log(`\nresult: ${file}${options.json ? ` and ${resolve(options.json)}` : ''}`);
  return file;
}

/** A chaos run's schedule beside the load, on this stack (started just before the load). */
function chaosPhase(options: DriverOptions, processes: ProcessSet, stack: Stack): ChaosPhase | undefined {
  if (!options.chaos) return undefined;
  const { redis, gateways, gatewayOptions, dir, simulator } = stack;
  return startChaosPhase({
    plan: options.chaos,
    stack: { processes, redis, gateways, gatewayOptions, dir, simulator },
    deployments: Object.entries(options.scenario.local.pools).flatMap(([pool, p]) => p.deployments.map((d) => ({ pool, id: d.id }))),
    leaseMs: options.leaseMs,
    adminKey: ADMIN_KEY,
  });
}

/** docs/chaos.md's results section. */
function writeChaosResults(options: DriverOptions, report: ChaosReport, resultFile: string): void {
  const { scenario, stages } = options;
  const file = writeChaosDoc(report, {
    command: `npm run loadtest -- ${process.argv.slice(2).join(' ')}`,
    scenario: scenario.name,
    gateways: options.gateways,
    load: `${stages.map((s) => `${fmt(s.durationMs / 1000, 0)} s → ${s.target}/s`).join(', ')} (${scenario.requests.map((r) => `${r.name} ×${r.weight}`).join(', ')})`,
    deployments: Object.values(scenario.local.pools).reduce((acc, p) => acc + p.deployments.length, 0),
    at: new Date(),
    resultFile: relative(REPO_ROOT, resultFile),
  });
  log(`wrote ${relative(REPO_ROOT, file)} (results section)`);
}

async function main(): Promise<number> {
  const options = parseOptions();
  if (typeof options === 'number') return options;
  const processes = new ProcessSet();
  // Hard cap: the stages, the drain, two minutes for starting and stopping the stack, and a chaos run's drift wait.
  processes.capRunTime(options.loadMs + options.drainMs + 120_000 + (options.chaos ? chaosTailMs(options.leaseMs) : 0));
  let chaos: ChaosPhase | undefined;
  try {
    log(`scenario ${options.scenario.name}: ${options.scenario.description}`);
    const stack = await startStack(processes, options);
    const requests = scenarioRequests(options.scenario);
    await smokeTest(stack.target, requests);
    await stack.simulator.reset(); // a clean slate upstream
    const spec = loadSpec(options, stack.target, requests);
    chaos = chaosPhase(options, processes, stack);
    const collected = await collect(stack, options.scenario, await runLoad(stack, spec), Boolean(chaos));
    printReport(options.scenario, collected, spec.okStatuses);
    const chaosReport = await chaos?.finish(collected.result);
    const file = writeResult(options, stack, collected, chaosReport);
    if (chaosReport && options.doc) writeChaosResults(options, chaosReport, file);
    await stack.generator.stop();
    const failed = collected.checks.some((c) => c.pass === false) || Boolean(chaosReport?.checks.some((c) => !c.pass));
    return failed ? 99 : 0;
  } finally {
    await chaos?.stop();
    await processes.stopAll();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`loadtest: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(2);
  },
);
