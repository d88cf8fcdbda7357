/**
 * The built-in demo: with no GATEWAY_CONFIG, the gateway fronts three simulated Azure OpenAI
 * deployments started in this process, so a newcomer's first curl works with no Azure account.
 */
import { parseConfig } from '../shared/config/load.ts';
import type { GatewayConfig } from '../shared/config/schema.ts';
import { startSimulator } from '../shared/simulator/index.ts';

export interface Demo {
  config: GatewayConfig;
  banner(url: string): string;
  close(): Promise<void>;
}

export const DEMO_CLIENT_KEY = 'spillway-demo-key';
const DEMO_UPSTREAM_KEY = 'simulated-upstream-key';
const REGIONS = [
  { id: 'eastus', region: 'East US' },
  { id: 'westus', region: 'West US' },
  { id: 'swedencentral', region: 'Sweden Central' },
];

export async function startDemo(): Promise<Demo> {
  const simulator = await startSimulator({
    apiKeys: [DEMO_UPSTREAM_KEY],
    deployments: REGIONS.map(({ id, region }) => ({ name: `gpt-4o-${id}`, region, tpm: 30_000, model: 'gpt-4o-2024-08-06' })),
    latency: { ttftMs: 120, perTokenMs: 15 },
  });
  const yaml = `
pools:
  gpt-4o:
    strategy: least-requests
    deployments:
${REGIONS.map(
  ({ id }) => `      - id: ${id}
        endpoint: ${simulator.url}
        deployment: gpt-4o-${id}
        apiKey: ${DEMO_UPSTREAM_KEY}
        model: gpt-4o
        tpm: 30000
        rpm: 180`,
).join('\n')}
clients:
  - name: demo
    apiKey: ${DEMO_CLIENT_KEY}
`;
  return {
    config: parseConfig(yaml, {}, 'built-in demo'),
    banner: (url) => `
Spillway demo: pool "gpt-4o" spreads over 3 simulated deployments (${simulator.url}).
Try:
  curl -s '${url}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21' \\
    -H 'api-key: ${DEMO_CLIENT_KEY}' -H 'content-type: application/json' \\
    -d '{"messages":[{"role":"user","content":"Hello!"}],"max_tokens":20}'

`,
    close: () => simulator.close(),
  };
}
