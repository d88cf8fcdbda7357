/**
 * Runs the Azure OpenAI simulator as a process: `npm run simulator -- --help`.
 * Prints one JSON line {"url","port","deployments"} once it listens; stops on SIGTERM/SIGINT.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { startSimulator } from './index.ts';
import { validateOptions } from './options.ts';
import type { SimDeployment, SimulatorOptions } from './types.ts';

const HELP = `Azure OpenAI simulator

Usage: npm run simulator -- [options]

  --config FILE            YAML or JSON file with the SimulatorOptions shape:
                             apiKeys: [KEY], windowMs: 60000, latency: {ttftMs, perTokenMs},
                             deployments: [{name, model, tpm, rpm, ptu: {tokensPerMinute},
                                            region, latency, completionTokens}]
                           Flags below override or extend it.
  --port N                 listen port (default 0 = any free port)
  --host H                 listen address (default 127.0.0.1)
  --api-key KEY            accepted key; repeat for several (default 'sim-key' when none given)
  --deployments a,b,c      add deployments with the settings below (default 'gpt-4o' when none given)
  --model M                model version they report (default gpt-4o-2024-08-06)
  --tpm N                  tokens per minute (absent = unlimited)
  --rpm N                  requests per minute (default tpm/1000*6)
  --ptu N                  provisioned mode with N tokens per minute (instead of --tpm/--rpm)
  --region R               x-ms-region (default "East US")
  --completion-tokens N    tokens generated per choice (default 20)
  --ttft-ms N              time to first token (default 0)
  --per-token-ms N         time between tokens (default 0)
  --window-ms N            length of the rate-limit minute (default 60000)
  --default-max-tokens N   max_tokens assumed by the rate-limit estimate when absent (default 16)
  --no-count-rejected      429-rejected requests do not count against the windows
  --help                   this text

Control API on the same port: POST /_sim/faults, GET /_sim/stats, POST /_sim/reset.
`;

function numberFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isFinite(number)) throw new Error(`--${flag} needs a number, got '${value}'`);
  return number;
}

function optionsFromArgs(args: string[]): SimulatorOptions | 'help' {
  const { values } = parseArgs({
    args,
    allowNegative: true,
    options: {
      config: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      'api-key': { type: 'string', multiple: true },
      deployments: { type: 'string' },
      model: { type: 'string' },
      tpm: { type: 'string' },
      rpm: { type: 'string' },
      ptu: { type: 'string' },
      region: { type: 'string' },
      'completion-tokens': { type: 'string' },
      'ttft-ms': { type: 'string' },
      'per-token-ms': { type: 'string' },
      'window-ms': { type: 'string' },
      'default-max-tokens': { type: 'string' },
      'count-rejected': { type: 'boolean' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) return 'help';

  const base: Partial<SimulatorOptions> = values.config
    ? (parseYaml(readFileSync(values.config, 'utf8')) as Partial<SimulatorOptions>)
    : {};
  const options: Record<string, unknown> = { ...base };
  const port = numberFlag(values.port, 'port');
  if (port !== undefined) options.port = port;
  if (values.host !== undefined) options.host = values.host;
  if (values['api-key']) options.apiKeys = [...(base.apiKeys ?? []), ...values['api-key']];
  options.apiKeys ??= ['sim-key'];
  const windowMs = numberFlag(values['window-ms'], 'window-ms');
  if (windowMs !== undefined) options.windowMs = windowMs;
  const defaultMaxTokens = numberFlag(values['default-max-tokens'], 'default-max-tokens');
  if (defaultMaxTokens !== undefined) options.defaultMaxTokens = defaultMaxTokens;
  if (values['count-rejected'] !== undefined) options.countRejected = values['count-rejected'];
  const ttftMs = numberFlag(values['ttft-ms'], 'ttft-ms');
  const perTokenMs = numberFlag(values['per-token-ms'], 'per-token-ms');
  if (ttftMs !== undefined || perTokenMs !== undefined) {
    options.latency = { ttftMs: ttftMs ?? base.latency?.ttftMs ?? 0, perTokenMs: perTokenMs ?? base.latency?.perTokenMs ?? 0 };
  }

  const deployments: SimDeployment[] = [...(base.deployments ?? [])];
  const names =
    values.deployments
      ?.split(',')
      .map((name) => name.trim())
      .filter((name) => name !== '') ?? [];
  if (names.length === 0 && deployments.length === 0) names.push('gpt-4o');
  for (const name of names) {
    const deployment: SimDeployment = { name };
    if (values.model !== undefined) deployment.model = values.model;
    const tpm = numberFlag(values.tpm, 'tpm');
    if (tpm !== undefined) deployment.tpm = tpm;
    const rpm = numberFlag(values.rpm, 'rpm');
    if (rpm !== undefined) deployment.rpm = rpm;
    const ptu = numberFlag(values.ptu, 'ptu');
    if (ptu !== undefined) deployment.ptu = { tokensPerMinute: ptu };
    if (values.region !== undefined) deployment.region = values.region;
    const completionTokens = numberFlag(values['completion-tokens'], 'completion-tokens');
    if (completionTokens !== undefined) deployment.completionTokens = completionTokens;
    deployments.push(deployment);
  }
  options.deployments = deployments;
  return validateOptions(options);
}

async function main(): Promise<void> {
  let options: SimulatorOptions | 'help';
  try {
    options = optionsFromArgs(process.argv.slice(2));
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    console.error('Try --help.');
    process.exit(2);
  }
  if (options === 'help') {
    process.stdout.write(HELP);
    return;
  }
  const simulator = await startSimulator(options);
  process.stdout.write(
    JSON.stringify({ url: simulator.url, port: simulator.port, deployments: options.deployments.map((deployment) => deployment.name) }) +
      '\n',
  );
  const stop = (): void => {
    simulator.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

await main();
