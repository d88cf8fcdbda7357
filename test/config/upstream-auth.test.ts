/** A deployment authenticates upstream one way: `apiKey`, or `auth: entra` (optionally a user-assigned `clientId`). */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, parseConfig } from '../../shared/config/load.ts';

const CLIENT_ID = '6d2c1f0e-4b7a-4c1e-9f3a-2b8d5e7c9a01';

/** A one-deployment pool with `lines` (YAML) as the deployment's authentication fields. */
function deployment(lines: string): string {
  const extra = lines
    .split('\n')
    .filter(Boolean)
    .map((line) => `        ${line}\n`)
    .join('');
  return `pools:\n  p:\n    deployments:\n      - id: a\n        endpoint: https://a.example.com\n        deployment: d\n${extra}`;
}

function problemsOf(text: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(text, env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    return error.problems;
  }
  assert.fail('the config was accepted');
}

describe('config: upstream auth', () => {
  test('auth: entra needs no apiKey; clientId names a user-assigned identity', () => {
    const entra = parseConfig(deployment('auth: entra')).pools.p?.deployments[0];
    assert.equal(entra?.auth, 'entra');
    assert.equal(entra?.apiKey, undefined);
    assert.equal(entra?.clientId, undefined);
    const assigned = parseConfig(deployment(`auth: entra\nclientId: ${CLIENT_ID}`)).pools.p?.deployments[0];
    assert.equal(assigned?.clientId, CLIENT_ID);
    const keyed = parseConfig(deployment('apiKey: k')).pools.p?.deployments[0];
    assert.equal(keyed?.apiKey, 'k');
    assert.equal(keyed?.auth, undefined);
  });

  const cases: [string, string, string][] = [
    ['both apiKey and auth: entra', 'apiKey: k\nauth: entra', 'pools.p.deployments[0].apiKey: set either apiKey or auth: entra, not both'],
    ['neither apiKey nor auth', '', 'pools.p.deployments[0].apiKey: required (or auth: entra for a Microsoft Entra ID token)'],
    ['an unknown auth', 'auth: managed-identity', 'pools.p.deployments[0].auth: must be "entra" (or leave it out and set apiKey)'],
    ['a clientId without auth: entra', `apiKey: k\nclientId: ${CLIENT_ID}`, 'pools.p.deployments[0].clientId: only with auth: entra'],
    ['a clientId that is no GUID', 'auth: entra\nclientId: my-identity', 'pools.p.deployments[0].clientId: must be a client id (a GUID)'],
  ];
  for (const [name, lines, expected] of cases) {
    test(`rejects ${name} with one line naming the field`, () => {
      assert.deepEqual(problemsOf(deployment(lines)), [expected]);
    });
  }

  test('an apiKey from a variable that is not set is reported once, as the missing variable', () => {
    assert.deepEqual(problemsOf(deployment('apiKey: ${GONE}')), ['pools.p.deployments[0].apiKey: environment variable GONE is not set']);
  });

  test('each deployment is checked, with its other problems', () => {
    const text = `${deployment('auth: entra\ntpm: 0')}      - id: b\n        endpoint: https://b.example.com\n        deployment: d\n`;
    assert.deepEqual(problemsOf(text).sort(), [
      'pools.p.deployments[0].tpm: must be positive',
      'pools.p.deployments[1].apiKey: required (or auth: entra for a Microsoft Entra ID token)',
    ]);
  });
});
