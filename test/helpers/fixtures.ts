/** Simulator + gateway fixtures shared by the gateway tests. */
import { randomUUID } from 'node:crypto';
import { startSimulator, type SimDeployment, type Simulator, type SimulatorOptions } from '../../shared/simulator/index.ts';
import { CLIENT_KEY, UPSTREAM_KEY } from './gateway.ts';

export async function simulator(deployments: (string | SimDeployment)[], options: Partial<SimulatorOptions> = {}): Promise<Simulator> {
  return startSimulator({
    apiKeys: [UPSTREAM_KEY],
    deployments: deployments.map((d) => (typeof d === 'string' ? { name: d } : d)),
    ...options,
  });
}

/** A pool name no other test uses, so tests sharing one Redis never see each other's state. */
export function uniquePool(prefix = 'pool'): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

export interface ChatOptions {
  key?: string;
  stream?: boolean;
  headers?: Record<string, string>;
  body?: Record<string, unknown>;
  signal?: AbortSignal;
}

/** POST an Azure-style chat completion to a gateway. */
export function chat(url: string, pool: string, options: ChatOptions = {}): Promise<Response> {
  return fetch(`${url}/openai/deployments/${pool}/chat/completions?api-version=2024-10-21`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'api-key': options.key ?? CLIENT_KEY, ...options.headers },
    body: JSON.stringify({
      messages: [{ role: 'user', content: 'Hello!' }],
      max_tokens: 5,
      ...(options.stream ? { stream: true } : {}),
      ...options.body,
    }),
    signal: options.signal ?? AbortSignal.timeout(10_000),
  });
}

export async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface TrafficOutcome {
  pool: string;
  status: number | string;
  ms: number;
}

/**
 * Chat requests from `clients` parallel clients, one after another each, until `stop` (bounded: 5 000
 * per client); `next` names where a client's i-th request goes. `stop` resolves with every outcome: the
 * status, or the error's message when there was no answer.
 */
export function chatTraffic(
  clients: number,
  next: (client: number, i: number) => { url: string; pool: string },
): { stop: () => Promise<TrafficOutcome[]> } {
  const outcomes: TrafficOutcome[] = [];
  let stopped = false;
  const running = Array.from({ length: clients }, async (_, client) => {
    for (let i = 0; !stopped && i < 5000; i++) {
      const { url, pool } = next(client, i);
      const started = performance.now();
      try {
        const response = await chat(url, pool);
        await response.arrayBuffer();
        outcomes.push({ pool, status: response.status, ms: performance.now() - started });
      } catch (error) {
        outcomes.push({ pool, status: (error as Error).message, ms: performance.now() - started });
      }
    }
  });
  return {
    async stop() {
      stopped = true;
      await Promise.all(running);
      return outcomes;
    },
  };
}
