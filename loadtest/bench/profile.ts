/**
 * --profile: a separate gateway under node --cpu-prof, so the profiler's overhead touches none of the
 * measured figures. Its summary covers the loaded phases only (start-up and warm-up left out).
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { stopChild, type ProcessSet } from '../../shared/processes/process-set.ts';
import { cpuMs } from '../../shared/processes/proc-stats.ts';
import { readProfile, summarizeProfile, type ProfileSummary } from '../lib/cpuprofile.ts';
import { CLIENT_KEY, startGateway } from '../lib/stack.ts';
import { baseSpec, phaseSpec } from './measure.ts';
import type { BenchOptions } from './options.ts';
import { POOL_PATH, type BenchStack, type Target } from './targets.ts';

export type Profile = ProfileSummary & { store: string; requests: number; procCpuMs: number };

export async function profileGateway(
  processes: ProcessSet,
  stack: BenchStack,
  options: BenchOptions,
  profileDir: string,
): Promise<Profile | undefined> {
  const { profileStore } = options;
  const gw = await startGateway(processes, stack.dir, {
    name: 'gw-profiled',
    configFile: stack.configFile,
    ...(profileStore === 'redis' ? { redisUrl: stack.redis!.url } : {}),
    logLevel: 'warn',
    nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`],
  });
  const target: Target = {
    key: profileStore === 'redis' ? 'gw1-redis' : 'gw1-mem',
    url: gw.url,
    apiKey: CLIENT_KEY,
    deploymentPath: POOL_PATH,
    gatewayPids: [gw.child.pid],
    nginxPids: [],
    usesRedis: profileStore === 'redis',
  };
  const { generator } = stack;
  await generator.run({
    ...baseSpec(target, false),
    mode: { kind: 'closed', concurrency: options.concurrency, durationMs: 1000 },
    returnSamples: false,
  });
  const fromUs = Number(process.hrtime.bigint() / 1000n);
  const cpuBefore = cpuMs(gw.child.pid);
  let requests = 0;
  for (const phase of ['closed', 'rate', 'stream'] as const)
    requests += (await generator.run({ ...phaseSpec(options, target, phase, options.rounds), returnSamples: false })).completed;
  const procCpuMs = cpuMs(gw.child.pid) - cpuBefore;
  await stopChild(gw.child.process, 20_000);
  const file = existsSync(profileDir) ? readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile')) : undefined;
  if (!file) {
    process.stdout.write(`no .cpuprofile found in ${profileDir}\n`);
    return undefined;
  }
  return {
    ...summarizeProfile(readProfile(join(profileDir, file)), 15, fromUs),
    store: profileStore,
    requests,
    procCpuMs: Math.round(procCpuMs),
  };
}
