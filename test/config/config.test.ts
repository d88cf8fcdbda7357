import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError, loadConfigFile, parseConfig } from '../../shared/config/load.ts';

const valid = `
pools:
  gpt-4o:
    strategy: round-robin
    deployments:
      - id: eastus
        endpoint: https://acct-eastus.openai.azure.com
        deployment: gpt-4o-eastus
        apiKey: \${AOAI_KEY_EASTUS}
        tpm: 150000
        rpm: 900
        priority: 1
        apiVersion: 2024-10-21
      - id: westus
        endpoint: https://acct-westus.openai.azure.com
        deployment: gpt-4o-westus
        apiKey: literal-key
        tpm: \${WESTUS_TPM}
        priority: 2
clients:
  - name: team-a
    apiKey: \${TEAM_A_KEY}
`;
const env = { AOAI_KEY_EASTUS: 'k-east', WESTUS_TPM: '80000', TEAM_A_KEY: 'team-a-secret' };

function problemsOf(text: string, environment: NodeJS.ProcessEnv = env): string[] {
  try {
    parseConfig(text, environment);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    return error.problems;
  }
  assert.fail('the config was accepted');
}

/** A one-deployment pool with `extra` YAML lines spliced into the deployment. */
function withDeployment(extra: string): string {
  return `pools:\n  p:\n    deployments:\n      - id: a\n        endpoint: https://a.example.com\n        deployment: d\n        apiKey: k\n${extra
    .split('\n')
    .filter(Boolean)
    .map((line) => `        ${line}`)
    .join('\n')}\n`;
}

describe('config', () => {
  test('a valid file parses, substitutes variables and fills defaults', () => {
    const config = parseConfig(valid, env);
    const pool = config.pools['gpt-4o'];
    assert.ok(pool);
    assert.equal(pool.strategy, 'round-robin');
    assert.equal(pool.deployments[0]?.apiKey, 'k-east');
    assert.equal(pool.deployments[1]?.tpm, 80000, 'a whole-variable number becomes a number');
    assert.equal(pool.deployments[1]?.weight, 1);
    assert.equal(pool.deployments[1]?.priority, 2);
    assert.equal(config.clients?.[0]?.apiKey, 'team-a-secret');
    assert.equal(config.gateway.maxAttempts, 3);
    assert.equal(config.gateway.breaker.resetTimeoutMs, 30000);
  });

  test('the strategy defaults to least-requests', () => {
    assert.equal(parseConfig(withDeployment('')).pools.p?.strategy, 'least-requests');
  });

  const cases: [string, string, NodeJS.ProcessEnv | undefined, string][] = [
    ['missing variable', withDeployment('rpm: ${NOT_SET}'), {}, 'pools.p.deployments[0].rpm: environment variable NOT_SET is not set'],
    ['non-positive tpm', withDeployment('tpm: 0'), undefined, 'pools.p.deployments[0].tpm: must be positive'],
    ['negative tpm', withDeployment('tpm: -10'), undefined, 'pools.p.deployments[0].tpm: must be positive'],
    ['unknown key', withDeployment('tmp: 1000'), undefined, 'pools.p.deployments[0].tmp: unknown key'],
    ['bad api version', withDeployment('apiVersion: yesterday'), undefined, 'pools.p.deployments[0].apiVersion: must look like 2024-10-21'],
    [
      'unknown strategy',
      withDeployment('').replace('    deployments:', '    strategy: fastest\n    deployments:'),
      undefined,
      'pools.p.strategy: must be one of least-requests, round-robin, random, power-of-two, weighted',
    ],
    ['empty pool', 'pools:\n  p:\n    deployments: []\n', undefined, 'pools.p.deployments: a pool needs at least one deployment'],
    ['no pools', 'pools: {}\n', undefined, 'pools: define at least one pool'],
    ['unknown top-level key', `pool: {}\n${withDeployment('')}`, undefined, 'pool: unknown key'],
    [
      'endpoint that is not a URL',
      'pools:\n  p:\n    deployments:\n      - {id: a, endpoint: eastus.example.com, deployment: d, apiKey: k}\n',
      undefined,
      'pools.p.deployments[0].endpoint: must be an http(s) URL',
    ],
    [
      'duplicate deployment id',
      'pools:\n  p:\n    deployments:\n      - {id: a, endpoint: "https://a.example", deployment: d, apiKey: k}\n      - {id: a, endpoint: "https://b.example", deployment: d, apiKey: k}\n',
      undefined,
      'pools.p.deployments[1].id: duplicate deployment id "a"',
    ],
    [
      'duplicate client key',
      `${withDeployment('')}clients:\n  - {name: a, apiKey: same-key-123}\n  - {name: b, apiKey: same-key-123}\n`,
      undefined,
      'clients[1].apiKey: two clients share one key',
    ],
  ];
  for (const [name, text, environment, expected] of cases) {
    test(`rejects ${name} with one line naming the field`, () => {
      assert.deepEqual(problemsOf(text, environment), [expected]);
    });
  }

  test('reports every problem of a file at once', () => {
    const problems = problemsOf(
      'pools:\n  p:\n    strategy: nope\n    deployments:\n      - {id: a, endpoint: x, deployment: d, apiKey: "${GONE}", tpm: 0}\n',
      {},
    );
    assert.deepEqual(problems.sort(), [
      'pools.p.deployments[0].apiKey: environment variable GONE is not set',
      'pools.p.deployments[0].endpoint: must be an http(s) URL',
      'pools.p.deployments[0].tpm: must be positive',
      'pools.p.strategy: must be one of least-requests, round-robin, random, power-of-two, weighted',
    ]);
  });

  test('YAML syntax errors and duplicate keys are reported, not thrown raw', () => {
    assert.match(problemsOf('pools:\n  p: [\n')[0] ?? '', /^YAML: /);
    assert.match(problemsOf('pools:\n  p: {}\n  p: {}\n')[0] ?? '', /^YAML: .*unique/i);
  });

  test('the error message names the file and lists one problem per line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'spillway-config-'));
    const file = join(dir, 'gateway.yaml');
    writeFileSync(file, withDeployment('tpm: 0\nrpm: 0'));
    assert.throws(
      () => loadConfigFile(file),
      (error: Error) => {
        assert.equal(
          error.message,
          `invalid config ${file}:\n  - pools.p.deployments[0].tpm: must be positive\n  - pools.p.deployments[0].rpm: must be positive`,
        );
        return true;
      },
    );
    assert.throws(() => loadConfigFile(join(dir, 'absent.yaml')), /cannot read the file: ENOENT/);
  });
});
