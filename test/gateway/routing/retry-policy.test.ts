import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { isFault, isMissingDeployment, mayFailOver } from '../../../gateway/routing/retry-policy.ts';
import type { AttemptOutcome } from '../../../gateway/upstream/forwarder.ts';
import { freePort } from '../../helpers/redis-server.ts';

/** A status of every class the gateway can meet upstream. */
const CLIENTS_OWN = [400, 401, 403, 409, 413, 415, 422];
const FAULTS = [408, 500, 502, 503, 504];

describe('mayFailOver', () => {
  test('429, 408 and the 5xx another deployment may well not have fail over; a 404 is read to see whose it is', () => {
    for (const status of [429, ...FAULTS, 404]) assert.equal(mayFailOver(status), true, String(status));
  });

  test('success, redirects, the client’s own 4xx and other 5xx do not', () => {
    for (const status of [200, 201, 204, 301, 304, ...CLIENTS_OWN, 501, 505]) assert.equal(mayFailOver(status), false, String(status));
  });
});

describe('isMissingDeployment', () => {
  test('only a 404 whose body says DeploymentNotFound', () => {
    const notFound = Buffer.from(
      '{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}',
    );
    assert.equal(isMissingDeployment(404, notFound), true);
    assert.equal(isMissingDeployment(404, Buffer.from('{"error":{"code":"404","message":"Resource not found"}}')), false);
    assert.equal(isMissingDeployment(404, Buffer.alloc(0)), false);
    assert.equal(isMissingDeployment(400, notFound), false, 'not a 404');
    assert.equal(isMissingDeployment(500, notFound), false);
  });
});

describe('isFault', () => {
  // Real outcomes: responses from a server answering the status in the path, errors from a closed port.
  let server: Server;
  let port: number;
  before(async () => {
    server = createServer((req, res) => {
      res.statusCode = Number(req.url?.slice(1));
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  function outcomeAt(targetPort: number, path: string): Promise<AttemptOutcome> {
    return new Promise((resolve, reject) => {
      const upstreamRequest = request({ host: '127.0.0.1', port: targetPort, path, agent: false, timeout: 5000 }, (response) => {
        response.resume();
        resolve({ kind: 'response', response, upstreamRequest });
      });
      upstreamRequest.on('timeout', () => upstreamRequest.destroy(new Error('no answer in 5 s')));
      upstreamRequest.on('error', (error: NodeJS.ErrnoException) =>
        error.message.includes('no answer') ? reject(error) : resolve({ kind: 'error', error, timedOut: false }),
      );
      upstreamRequest.end();
    });
  }

  test('408 and 5xx responses count against the deployment', async () => {
    for (const status of FAULTS) assert.equal(isFault(await outcomeAt(port, `/${status}`)), true, String(status));
  });

  test('a 429 (a cooldown), a 404, the client’s own 4xx and successes do not', async () => {
    for (const status of [200, 429, 404, ...CLIENTS_OWN, 501])
      assert.equal(isFault(await outcomeAt(port, `/${status}`)), false, String(status));
  });

  test('a transport error or a timeout does', async () => {
    const refused = await outcomeAt(await freePort(), '/');
    assert.equal(refused.kind, 'error');
    assert.equal(isFault(refused), true);
    const timeout: NodeJS.ErrnoException = Object.assign(new Error('upstream did not answer in time'), { code: 'ETIMEDOUT' });
    assert.equal(isFault({ kind: 'error', error: timeout, timedOut: true }), true);
  });
});
