/**
 * Azure OpenAI simulator: start it in process with startSimulator(), or run cli.ts.
 * See README.md in this folder for what it reproduces and how.
 */
import type { AddressInfo } from 'node:net';
import { createDeploymentRuntime, type DeploymentRuntime } from './deployments.ts';
import { ResourceState } from './responses-api/state.ts';
import { validateOptions } from './options.ts';
import { createSimulatorServer } from './server.ts';
import { getTokenCounter } from './tokens.ts';
import type { DeploymentStats, FaultSpec, RecordedRequest, Simulator, SimulatorOptions } from './types.ts';

export type {
  DeploymentStats,
  Fault,
  FaultSpec,
  LatencyModel,
  RecordedRequest,
  SimDeployment,
  Simulator,
  SimulatorOptions,
} from './types.ts';

/** Schemas for callers that read faults or options from files or the network. */
export { faultSchema, faultSpecSchema } from './faults.ts';
export { simulatorOptionsSchema, validateOptions } from './options.ts';

const DEFAULT_MAX_TOKENS = 16;

export async function startSimulator(input: SimulatorOptions): Promise<Simulator> {
  const options = validateOptions(input);
  const deployments = new Map<string, DeploymentRuntime>();
  for (const deployment of options.deployments) deployments.set(deployment.name, createDeploymentRuntime(deployment, options));
  // Build the token counters now (a few hundred ms each) so that no request pays for it.
  for (const deployment of deployments.values()) getTokenCounter(deployment.encoding);
  const firstDeployment = deployments.values().next().value as DeploymentRuntime;
  // Stored responses, conversations and items: this instance is one Azure resource.
  const state = new ResourceState();

  const runtimeOf = (name: string): DeploymentRuntime => {
    const deployment = deployments.get(name);
    if (deployment === undefined) throw new Error(`simulator: unknown deployment '${name}'`);
    return deployment;
  };

  const simulatorControls = {
    setFault(name: string, spec: FaultSpec | null): void {
      runtimeOf(name).faults.set(spec);
    },
    stats(name: string): DeploymentStats {
      return runtimeOf(name).stats.snapshot();
    },
    allStats(): Record<string, DeploymentStats> {
      const all: Record<string, DeploymentStats> = {};
      for (const [name, deployment] of deployments) all[name] = deployment.stats.snapshot();
      return all;
    },
    resetStats(): void {
      for (const deployment of deployments.values()) deployment.stats.reset();
    },
    reset(): void {
      for (const deployment of deployments.values()) {
        deployment.stats.reset();
        deployment.stats.clearRecentRequests();
        deployment.limiter.reset();
        deployment.faults.set(null);
      }
      state.clear();
    },
    recentRequests(name: string): RecordedRequest[] {
      return runtimeOf(name).stats.recentRequests();
    },
    hasDeployment(name: string): boolean {
      return deployments.has(name);
    },
  };

  const server = createSimulatorServer(
    {
      deployments,
      firstDeployment,
      apiKeys: new Set(options.apiKeys),
      defaultMaxTokens: options.defaultMaxTokens ?? DEFAULT_MAX_TOKENS,
      state,
    },
    simulatorControls,
  );
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;

  let closing: Promise<void> | null = null;
  return {
    url: `http://${urlHost}:${port}`,
    port,
    setFault: simulatorControls.setFault,
    stats: simulatorControls.stats,
    allStats: simulatorControls.allStats,
    resetStats: simulatorControls.resetStats,
    reset: simulatorControls.reset,
    recentRequests: simulatorControls.recentRequests,
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        state.clear();
        server.close(() => resolve());
        // Streams, hangs and idle keep-alive sockets: destroying them fires each response's
        // 'close', which clears its timers.
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
