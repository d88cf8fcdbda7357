import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ClientAuth, keyMatches, presentedKey } from '../../../gateway/http/auth.ts';
import { NOWHERE } from '../../helpers/collaborators.ts';
import { testConfig } from '../../helpers/gateway.ts';

const ALPHA_KEY = 'alpha-key-0001';
const BETA_KEY = 'beta-key-00002';

/** The clients as the gateway gets them: through the config schema. */
function clients(list: { name: string; apiKey: string; tpm?: number; rpm?: number }[] | null) {
  return testConfig({ pools: { p: { deployments: [{ id: 'd', endpoint: NOWHERE }] } }, clients: list }).clients;
}

describe('ClientAuth', () => {
  const auth = new ClientAuth(
    clients([
      { name: 'alpha', apiKey: ALPHA_KEY, tpm: 1000, rpm: 10 },
      { name: 'beta', apiKey: BETA_KEY },
    ]),
  );

  test('identifies a client by api-key and by Authorization: Bearer, quotas carried on the identity', () => {
    assert.equal(auth.enabled, true);
    assert.deepEqual(auth.identify({ 'api-key': ALPHA_KEY }), { name: 'alpha', tpm: 1000, rpm: 10 });
    assert.deepEqual(auth.identify({ authorization: `Bearer ${ALPHA_KEY}` }), { name: 'alpha', tpm: 1000, rpm: 10 });
    assert.deepEqual(auth.identify({ authorization: `Bearer ${BETA_KEY}` }), { name: 'beta', tpm: undefined, rpm: undefined });
    // A second request with the same key takes the verified path: the same client again.
    assert.deepEqual(auth.identify({ 'api-key': BETA_KEY }), { name: 'beta', tpm: undefined, rpm: undefined });
  });

  test('an unknown or missing key identifies nobody, also after valid keys were seen', () => {
    auth.identify({ 'api-key': ALPHA_KEY });
    assert.equal(auth.identify({ 'api-key': 'alpha-key-0002' }), undefined);
    assert.equal(auth.identify({ 'api-key': 'alpha-key-0002' }), undefined, 'an unknown key is not remembered as known');
    assert.equal(auth.identify({ 'api-key': ALPHA_KEY.toUpperCase() }), undefined, 'keys are case-sensitive');
    assert.equal(auth.identify({ authorization: `Basic ${ALPHA_KEY}` }), undefined);
    assert.equal(auth.identify({}), undefined);
    assert.equal(auth.identify({ 'api-key': '' }), undefined);
  });

  test('api-key is the key presented when both headers are sent', () => {
    assert.equal(auth.identify({ 'api-key': 'not-a-client-key', authorization: `Bearer ${ALPHA_KEY}` }), undefined);
    assert.equal(auth.identify({ 'api-key': BETA_KEY, authorization: `Bearer ${ALPHA_KEY}` })?.name, 'beta');
  });

  test('with no clients configured, auth is disabled and every request is anonymous', () => {
    for (const disabled of [new ClientAuth(undefined), new ClientAuth([]), new ClientAuth(clients(null))]) {
      assert.equal(disabled.enabled, false);
      assert.deepEqual(disabled.identify({}), { name: 'anonymous' });
      assert.deepEqual(disabled.identify({ 'api-key': 'whatever-key' }), { name: 'anonymous' });
    }
  });
});

describe('presentedKey', () => {
  test('api-key as sent; an empty one falls through to Authorization', () => {
    assert.equal(presentedKey({ 'api-key': 'k1' }), 'k1');
    assert.equal(presentedKey({ 'api-key': '' }), undefined);
    assert.equal(presentedKey({ 'api-key': '', authorization: 'Bearer k2' }), 'k2');
  });

  test('bearer in any case, with any whitespace around the key', () => {
    for (const header of ['Bearer k3', 'bearer k3', 'BEARER k3', 'BeArEr k3', 'Bearer    k3', 'Bearer\tk3', 'Bearer k3  ']) {
      assert.equal(presentedKey({ authorization: header }), 'k3', JSON.stringify(header));
    }
  });

  test('no key: another scheme, no space after the scheme, or nothing after it', () => {
    for (const header of ['Basic k4', 'BearerK4', 'Bearer', 'Bearer ', 'Bearer    ', '', 'k4 Bearer']) {
      assert.equal(presentedKey({ authorization: header }), undefined, JSON.stringify(header));
    }
    assert.equal(presentedKey({}), undefined);
  });
});

describe('keyMatches', () => {
  test('the right key matches; a wrong, empty, longer or missing one does not', () => {
    assert.equal(keyMatches('admin-secret', 'admin-secret'), true);
    assert.equal(keyMatches('admin-secreT', 'admin-secret'), false);
    assert.equal(keyMatches('admin-secret-and-more', 'admin-secret'), false, 'lengths differ: no throw, no match');
    assert.equal(keyMatches('', 'admin-secret'), false);
    assert.equal(keyMatches(undefined, 'admin-secret'), false);
  });
});
