/**
 * The built-in demo: with no GATEWAY_CONFIG, the gateway fronts simulated Azure OpenAI deployments
 * started in this process (three gpt-4o, two text-embedding-3-small), so a newcomer's first curl
 * works with no Azure account. It listens on 127.0.0.1 unless HOST says otherwise (env.ts): its
 * client key is public.
 */
import { parseConfig } from '../shared/config/load.ts';
import type { GatewayConfig } from '../shared/config/schema.ts';
import { startSimulator } from '../shared/simulator/index.ts';

export interface Demo {
  config: GatewayConfig;
  /** What to print once the gateway listens at `url`, bound to `host`. */
  banner(url: string, host: string): string;
  close(): Promise<void>;
}

export const DEMO_CLIENT_KEY = 'spillway-demo-key';
export const DEMO_CHAT_POOL = 'gpt-4o';
export const DEMO_EMBEDDINGS_POOL = 'text-embedding-3-small';
const DEMO_UPSTREAM_KEY = 'simulated-upstream-key';
const REGIONS = [
  { id: 'eastus', region: 'East US' },
  { id: 'westus', region: 'West US' },
  { id: 'swedencentral', region: 'Sweden Central' },
];
const EMBEDDINGS_REGIONS = [REGIONS[0]!, REGIONS[2]!];

/** 127.0.0.1, ::1, localhost: only this machine can connect. */
function loopbackOnly(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

export async function startDemo(): Promise<Demo> {
  const simulator = await startSimulator({
    apiKeys: [DEMO_UPSTREAM_KEY],
    deployments: [
      ...REGIONS.map(({ id, region }) => ({ name: `gpt-4o-${id}`, region, tpm: 30_000, model: 'gpt-4o-2024-08-06' })),
      ...EMBEDDINGS_REGIONS.map(({ id, region }) => ({
        name: `text-embedding-3-small-${id}`,
        region,
        tpm: 120_000,
        model: 'text-embedding-3-small',
        latency: { ttftMs: 40, perTokenMs: 0 },
      })),
    ],
    latency: { ttftMs: 120, perTokenMs: 15 },
  });
  const deployment = (id: string, name: string, model: string, tpm: number, rpm: number) => `      - id: ${id}
        endpoint: ${simulator.url}
        deployment: ${name}
        apiKey: ${DEMO_UPSTREAM_KEY}
        model: ${model}
        tpm: ${tpm}
        rpm: ${rpm}`;
  // No load balancer in front of the demo: Ctrl-C stops it without the shutdown delay.
  const yaml = `
gateway:
  shutdownDelayMs: 0
pools:
  ${DEMO_CHAT_POOL}:
    strategy: least-requests
    deployments:
${REGIONS.map(({ id }) => deployment(id, `gpt-4o-${id}`, 'gpt-4o', 30_000, 180)).join('\n')}
  ${DEMO_EMBEDDINGS_POOL}:
    strategy: least-requests
    deployments:
${EMBEDDINGS_REGIONS.map(({ id }) => deployment(id, `text-embedding-3-small-${id}`, 'text-embedding-3-small', 120_000, 720)).join('\n')}
clients:
  - name: demo
    apiKey: ${DEMO_CLIENT_KEY}
`;
  return {
    config: parseConfig(yaml, {}, 'built-in demo'),
    banner: (url, host) => `
Spillway demo: pool "${DEMO_CHAT_POOL}" spreads over ${REGIONS.length} simulated deployments and pool "${DEMO_EMBEDDINGS_POOL}" over ${EMBEDDINGS_REGIONS.length} (simulator at ${simulator.url}).
${
  loopbackOnly(host)
    ? `Listening on ${host} only: other machines cannot reach it (HOST=0.0.0.0 opens it to them).`
    : `Listening on ${host}: other machines can reach it, and its client key is public.`
}
Try:
  curl -s '${url}/openai/deployments/${DEMO_CHAT_POOL}/chat/completions?api-version=2024-10-21' \\
    -H 'api-key: ${DEMO_CLIENT_KEY}' -H 'content-type: application/json' \\
    -d '{"messages":[{"role":"user","content":"Hello!"}],"max_tokens":20}'
  curl -s '${url}/openai/deployments/${DEMO_EMBEDDINGS_POOL}/embeddings?api-version=2024-10-21' \\
    -H 'api-key: ${DEMO_CLIENT_KEY}' -H 'content-type: application/json' \\
    -d '{"input":["Hello!","How are you?"]}'

`,
    close: () => simulator.close(),
  };
}
