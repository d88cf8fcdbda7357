/** The bench's command line: which targets, how long each phase runs, and the run's hard cap. */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parseDuration } from '../lib/scenario.ts';
import { NGINX_MISSING, nginxBinary } from '../lib/stack.ts';

export const ALL_TARGETS = ['direct', 'nginx', 'node-proxy', 'stack-floor', 'gw1-mem', 'gw1-redis', 'gw3-redis', 'gw1-redis-info'] as const;
/** gw1-mem and gw1-redis run from another checkout's gateway/main.ts (--compare-with). */
export const BEFORE_TARGETS = ['gw1-mem@before', 'gw1-redis@before'] as const;
export type TargetKey = (typeof ALL_TARGETS)[number] | (typeof BEFORE_TARGETS)[number];
const DEFAULT_TARGETS: TargetKey[] = ['direct', 'nginx', 'node-proxy', 'stack-floor', 'gw1-mem', 'gw1-redis', 'gw3-redis'];
/** The targets of phase 4 (APIs) unless --api-targets says otherwise; with --compare-with, their @before twins too. */
const DEFAULT_API_TARGETS: TargetKey[] = ['direct', 'gw1-mem', 'gw1-redis'];
/**
 * Requests in one run of phase 4 at most: each create and follow-up is a response the simulator
 * stores, and it keeps 10 000 (then evicts the oldest), so a run must leave room for the pool of
 * responses its follow-ups continue, created just before it.
 */
export const MAX_API_RUN_REQUESTS = 5000;
/** The pool of responses a follow-up run continues: this many, created within API_POOL_BUDGET_MS. */
export const API_POOL_SIZE = 64;
export const API_POOL_BUDGET_MS = 10_000;

export const LABELS: Record<TargetKey, string> = {
  direct: 'direct (simulator)',
  nginx: 'nginx → simulator',
  'node-proxy': 'bare Node proxy → simulator',
  'stack-floor': 'stack floor → simulator',
  'gw1-mem': '1 gateway, memory store',
  'gw1-redis': '1 gateway, Redis',
  'gw3-redis': 'nginx → 3 gateways, Redis',
  'gw1-redis-info': '1 gateway, Redis, LOG_LEVEL=info',
  'gw1-mem@before': '1 gateway, memory store (before)',
  'gw1-redis@before': '1 gateway, Redis (before)',
};

export const HELP = `Gateway overhead benchmark

  npm run bench [-- options]

  --rounds N            interleaved rounds of every phase (default 3)
  --duration D          closed-loop time per target per round (default 3s)
  --concurrency N       closed-loop workers (default 32)
  --rate N              fixed-rate phase, requests/s (default 200)
  --rate-duration D     fixed-rate time per target per round (default 3s)
  --stream-rate N       streaming phase, requests/s (default 50)
  --stream-duration D   streaming time per target per round (default 2s)
  --api-rate N          APIs phase (chat, Responses create, Responses follow-up), requests/s (default 200)
  --api-duration D      APIs phase, time per API per target per round (default 2s)
  --api-targets LIST    targets of the APIs phase, among --targets (default: ${DEFAULT_API_TARGETS.join(',')} of them,
                        and their @before twins with --compare-with); 'none' skips the phase
  --targets LIST        comma-separated subset/superset of: ${ALL_TARGETS.join(',')}
                        (default: all but gw1-redis-info)
  --compare-with DIR    DIR: another checkout of this repository (e.g. a git worktree of an earlier
                        commit, with node_modules); adds the targets gw1-mem@before and gw1-redis@before,
                        run from DIR's gateway/main.ts and interleaved in the same rounds as the others,
                        so that before and after come from one run
  --profile             afterwards, load one more gateway (not one of the targets) running under
                        node --cpu-prof with the same phases, and summarise its profile
  --profile-store S     redis (default) or memory: the store of that profiled gateway
  --nginx-workers N     nginx worker_processes (default 1)
  --no-doc              do not rewrite docs/benchmarks.md and docs/benchmarks.svg
  --help                this text
`;

export interface BenchOptions {
  rounds: number;
  closedMs: number;
  concurrency: number;
  rate: number;
  rateMs: number;
  streamRate: number;
  streamMs: number;
  apiRate: number;
  apiMs: number;
  nginxWorkers: number;
  keys: TargetKey[];
  /** The targets of phase 4 (APIs), in run order: a subset of `keys`. */
  apiKeys: TargetKey[];
  profile: boolean;
  profileStore: 'redis' | 'memory';
  noDoc: boolean;
  /** The other checkout of --compare-with, absolute. */
  compareWith: string | undefined;
  /** The command as typed, for the report. */
  command: string;
}

/** The options, or the exit code when the run stops here (--help, nginx missing). */
export function parseOptions(): BenchOptions | number {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      duration: { type: 'string', default: '3s' },
      concurrency: { type: 'string', default: '32' },
      rate: { type: 'string', default: '200' },
      'rate-duration': { type: 'string', default: '3s' },
      'stream-rate': { type: 'string', default: '50' },
      'stream-duration': { type: 'string', default: '2s' },
      'api-rate': { type: 'string', default: '200' },
      'api-duration': { type: 'string', default: '2s' },
      'api-targets': { type: 'string' },
      targets: { type: 'string' },
      'compare-with': { type: 'string' },
      profile: { type: 'boolean' },
      'profile-store': { type: 'string', default: 'redis' },
      'nginx-workers': { type: 'string', default: '1' },
      'no-doc': { type: 'boolean' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (!nginxBinary()) {
    process.stderr.write(`${NGINX_MISSING}\n`);
    return 3;
  }
  const options: BenchOptions = {
    rounds: Number(values.rounds),
    closedMs: parseDuration(values.duration),
    concurrency: Number(values.concurrency),
    rate: Number(values.rate),
    rateMs: parseDuration(values['rate-duration']),
    streamRate: Number(values['stream-rate']),
    streamMs: parseDuration(values['stream-duration']),
    apiRate: Number(values['api-rate']),
    apiMs: parseDuration(values['api-duration']),
    nginxWorkers: Number(values['nginx-workers']),
    keys: [],
    apiKeys: [],
    profile: values.profile ?? false,
    profileStore: values['profile-store'] === 'memory' ? 'memory' : 'redis',
    noDoc: values['no-doc'] ?? false,
    compareWith: values['compare-with'] === undefined ? undefined : checkout(values['compare-with']),
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
  };
  options.keys = targetKeys(values.targets, options.compareWith);
  options.apiKeys = apiTargetKeys(values['api-targets'], options.keys);
  const { rounds, concurrency, rate, streamRate, apiRate, apiMs } = options;
  if (!(rounds >= 1 && rounds <= 10 && concurrency >= 1 && concurrency <= 1024 && rate > 0 && streamRate > 0 && apiRate > 0))
    throw new Error('bad numeric option');
  if ((apiRate * apiMs) / 1000 > MAX_API_RUN_REQUESTS)
    throw new Error(
      `--api-rate × --api-duration: at most ${MAX_API_RUN_REQUESTS} requests per run (the simulator stores 10 000 responses)`,
    );
  return options;
}

/** Phase 4's targets, in the order of `keys`: the default ones present (with their @before twins), or the list given. */
function apiTargetKeys(list: string | undefined, keys: TargetKey[]): TargetKey[] {
  if (list === undefined) return keys.filter((key) => DEFAULT_API_TARGETS.includes(key.replace('@before', '') as TargetKey));
  if (list.trim() === 'none') return [];
  const wanted = list.split(',').map((t) => t.trim());
  for (const key of wanted)
    if (!(keys as string[]).includes(key)) throw new Error(`--api-targets: '${key}' is not among the targets (${keys.join(', ')})`);
  return keys.filter((key) => wanted.includes(key));
}

function isBefore(key: string): boolean {
  return (BEFORE_TARGETS as readonly string[]).includes(key);
}

/** The targets in run order; with --compare-with, each @before target right after its counterpart. */
function targetKeys(list: string | undefined, compareWith: string | undefined): TargetKey[] {
  const keys = (list ? list.split(',').map((t) => t.trim()) : DEFAULT_TARGETS) as TargetKey[];
  const known: readonly string[] = [...ALL_TARGETS, ...BEFORE_TARGETS];
  for (const key of keys) if (!known.includes(key)) throw new Error(`unknown target '${key}'; known: ${known.join(', ')}`);
  if (!compareWith) {
    if (keys.some(isBefore)) throw new Error(`${BEFORE_TARGETS.join(' and ')} need --compare-with DIR`);
    return keys;
  }
  const out = keys.filter((key) => !isBefore(key));
  for (const before of BEFORE_TARGETS) {
    const at = out.indexOf(before.replace('@before', '') as TargetKey);
    if (at === -1) out.push(before);
    else out.splice(at + 1, 0, before);
  }
  return out;
}

/** DIR of --compare-with, absolute, once it has what the gateway needs to run. */
function checkout(dir: string): string {
  const root = resolve(dir);
  if (!existsSync(join(root, 'gateway', 'main.ts'))) throw new Error(`--compare-with: ${root} has no gateway/main.ts`);
  if (!existsSync(join(root, 'node_modules'))) throw new Error(`--compare-with: ${root} has no node_modules (run npm ci there)`);
  return root;
}

/**
 * Every phase is timed; the hard cap covers them all plus start and stop. Phase 4, per target and
 * round: three runs, and one pool of responses (at most API_POOL_BUDGET_MS), plus a warm-up and a
 * probe per target.
 */
export function hardCapMs(options: BenchOptions): number {
  const { rounds, closedMs, rateMs, streamMs, apiMs } = options;
  const apisMs = options.apiKeys.length * (2 * API_POOL_BUDGET_MS + 2000 + rounds * (3 * (apiMs + 1000) + API_POOL_BUDGET_MS));
  const plannedMs =
    options.keys.length * (1500 + rounds * (closedMs + rateMs + streamMs + 3 * 1000)) +
    apisMs +
    (options.profile ? 30_000 + rounds * (closedMs + rateMs + streamMs + 3 * 1000) : 0);
  return plannedMs + 180_000;
}
