/**
 * The chaos events' actions on the local stack (lib/stack.ts): signals to the redis-server and the
 * gateways, restarts on the same ports, the simulator's faults through its control API.
 *
 * Each action is bounded: a killed process must exit within KILL_WAIT_MS, a restarted redis-server
 * must be ready within launchRedis's limit, a gateway within startGateway's, a control call within
 * the simulator handle's timeout. Restarted processes join the ProcessSet, so they are stopped on
 * every way out like the first ones. While Redis is frozen, a SIGINT or SIGTERM continues it at
 * once, so that the ProcessSet's shutdown does not have to wait out a stopped process's grace time.
 */
import { alive, type Child, type ProcessSet } from '../../shared/processes/process-set.ts';
import {
  restartRedis,
  startGateway,
  type GatewayHandle,
  type GatewayOptions,
  type RedisHandle,
  type SimulatorHandle,
} from '../lib/stack.ts';
import { epochMs, type ChaosActions, type PlannedEvent } from './schedule.ts';

/** A SIGKILLed process is gone in milliseconds; this long means something is wrong. */
const KILL_WAIT_MS = 5000;

export interface ChaosStack {
  processes: ProcessSet;
  /** The stack's Redis; restartRedis replaces its child in place. */
  redis: RedisHandle | undefined;
  /** The stack's gateways; a restarted gateway replaces its handle in this array. */
  gateways: GatewayHandle[];
  /** How each gateway was started (same index), to start it again on its port. */
  gatewayOptions: GatewayOptions[];
  /** The gateways' work directory (configs, logs). */
  dir: string;
  simulator: SimulatorHandle;
}

async function kill(child: Child): Promise<void> {
  if (!alive(child.process)) return;
  const exited = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), KILL_WAIT_MS);
    child.process.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  child.process.kill('SIGKILL');
  if (!(await exited)) throw new Error(`${child.name} (pid ${child.pid}) did not exit ${KILL_WAIT_MS} ms after SIGKILL`);
}

const since = (start: number) => `${Math.round(epochMs() - start)} ms`;

export function stackActions(stack: ChaosStack): ChaosActions {
  const activeFaults = new Set<string>();
  let frozen: Child | undefined;
  const thawOnSignal = () => {
    if (frozen && alive(frozen.process)) frozen.process.kill('SIGCONT');
  };
  const thaw = () => {
    if (frozen && alive(frozen.process)) frozen.process.kill('SIGCONT');
    frozen = undefined;
    process.off('SIGINT', thawOnSignal);
    process.off('SIGTERM', thawOnSignal);
  };
  const needRedis = (): RedisHandle => {
    if (!stack.redis) throw new Error('the run has no Redis');
    return stack.redis;
  };
  const gatewayOf = (index: number): GatewayHandle => {
    const gateway = stack.gateways[index];
    if (!gateway) throw new Error(`no gateway-${index + 1}`);
    return gateway;
  };

  return {
    async apply(event: PlannedEvent) {
      const { action } = event;
      switch (action.kind) {
        case 'redis-kill': {
          const redis = needRedis();
          const pid = redis.child.pid;
          await kill(redis.child);
          return [`killed pid ${pid}`];
        }
        case 'redis-freeze': {
          const redis = needRedis();
          frozen = redis.child;
          process.on('SIGINT', thawOnSignal);
          process.on('SIGTERM', thawOnSignal);
          redis.child.process.kill('SIGSTOP');
          return [`stopped pid ${redis.child.pid}`];
        }
        case 'gateway-kill': {
          const gateway = gatewayOf(action.gateway);
          await kill(gateway.child);
          return [`killed ${gateway.name} (pid ${gateway.child.pid}, port ${gateway.port})`];
        }
        case 'fault': {
          await stack.simulator.setFault(action.simDeployment, { fault: action.fault });
          activeFaults.add(action.simDeployment);
          return [];
        }
      }
    },

    async undo(event: PlannedEvent) {
      const { action } = event;
      switch (action.kind) {
        case 'redis-kill': {
          const redis = needRedis();
          const start = epochMs();
          await restartRedis(stack.processes, redis);
          return [`redis restarted on port ${redis.port} in ${since(start)} (pid ${redis.child.pid})`];
        }
        case 'redis-freeze': {
          thaw();
          return ['continued'];
        }
        case 'gateway-kill': {
          if (!action.restart) return ['not restarted'];
          const old = gatewayOf(action.gateway);
          const options = stack.gatewayOptions[action.gateway];
          if (!options) throw new Error(`no start options for ${old.name}`);
          const start = epochMs();
          const handle = await startGateway(stack.processes, stack.dir, { ...options, port: old.port });
          stack.gateways[action.gateway] = handle;
          return [`${handle.name} ready again on port ${handle.port} in ${since(start)}`];
        }
        case 'fault': {
          await stack.simulator.setFault(action.simDeployment, null);
          activeFaults.delete(action.simDeployment);
          return [];
        }
      }
    },

    async abort() {
      thaw();
      await Promise.allSettled([...activeFaults].map((deployment) => stack.simulator.setFault(deployment, null)));
      activeFaults.clear();
    },

    simulatorStats: () => stack.simulator.stats(),
  };
}
