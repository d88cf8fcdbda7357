import assert from 'node:assert/strict';
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { describe, test } from 'node:test';
import {
  attemptHeaders,
  bodyHeaders,
  header,
  isProvisioned,
  numberHeader,
  setAttemptHeaders,
  setQuotaHeaders,
  UTILIZATION_HEADER,
  writeUpstreamHead,
} from '../../../gateway/upstream/headers.ts';
import { send, serve, type Received } from '../../helpers/local-http.ts';

/** What a client reads after `write` set the head of a real ServerResponse (and it ended with a short body). */
async function headOf(write: (res: ServerResponse) => void): Promise<Received> {
  const server = await serve((_req, res) => {
    write(res);
    res.end('ok');
  });
  try {
    // A keep-alive client, so the connection header the client reads is the one our server chose.
    return await send(server.url, { method: 'GET', headers: { connection: 'keep-alive' } });
  } finally {
    await server.close();
  }
}

/** A deployment's answer as Azure sends it: what the client may see, and what describes the deployment or the hop. */
const upstream: IncomingHttpHeaders = {
  'content-type': 'application/json',
  'apim-request-id': 'apim-1',
  'x-ms-region': 'East US',
  'x-request-id': 'the-deployments-own-id',
  'x-ms-custom': ['a', 'b'],
  connection: 'close',
  'keep-alive': 'timeout=99',
  'transfer-encoding': 'chunked',
  'proxy-authenticate': 'Basic realm="upstream"',
  'set-cookie': ['affinity=east; Path=/'],
  'x-ratelimit-remaining-requests': '9',
  'x-ratelimit-remaining-tokens': '900',
  'x-ratelimit-limit-requests': '10',
  'x-ratelimit-limit-tokens': '1000',
  'x-ratelimit-reset-requests': '1s',
  'x-ratelimit-reset-tokens': '1s',
  [UTILIZATION_HEADER]: '12.5%',
};

describe('writeUpstreamHead', () => {
  test("passes the deployment's own headers, drops the hop's and the deployment's figures, adds the gateway's", async () => {
    const seen = await headOf((res) => writeUpstreamHead(res, 201, upstream, { requestId: 'req-1', deployment: 'east', attempts: 2 }));
    assert.equal(seen.status, 201);
    assert.equal(seen.headers['content-type'], 'application/json');
    assert.equal(seen.headers['apim-request-id'], 'apim-1');
    assert.equal(seen.headers['x-ms-region'], 'East US');
    assert.equal(seen.headers['x-ms-custom'], 'a, b', 'a repeated header keeps every value');
    for (const name of [
      'set-cookie',
      'proxy-authenticate',
      'x-ratelimit-remaining-requests',
      'x-ratelimit-remaining-tokens',
      'x-ratelimit-limit-requests',
      'x-ratelimit-limit-tokens',
      'x-ratelimit-reset-requests',
      'x-ratelimit-reset-tokens',
      UTILIZATION_HEADER,
    ]) {
      assert.equal(seen.headers[name], undefined, `${name} is dropped`);
    }
    // Hop-by-hop fields are this connection's own: framed by our server, not copied from upstream's.
    assert.equal(seen.headers['transfer-encoding'], undefined);
    assert.equal(seen.headers['content-length'], '2');
    assert.equal(seen.headers.connection, 'keep-alive');
    assert.notEqual(seen.headers['keep-alive'], 'timeout=99');
    assert.equal(seen.body.toString(), 'ok');
    assert.equal(seen.headers['x-request-id'], 'req-1', "the gateway's request id replaces the deployment's");
    assert.equal(seen.headers['x-gateway-deployment'], 'east');
    assert.equal(seen.headers['x-gateway-attempts'], '2');
  });

  test('skips absent values', async () => {
    const seen = await headOf((res) =>
      writeUpstreamHead(
        res,
        200,
        { 'x-absent': undefined, 'content-type': 'text/plain' },
        { requestId: 'r', deployment: 'd', attempts: 1 },
      ),
    );
    assert.equal(seen.status, 200);
    assert.equal('x-absent' in seen.headers, false);
    assert.equal(seen.headers['content-type'], 'text/plain');
  });
});

test('setAttemptHeaders names the deployment only when there is one', async () => {
  const served = await headOf((res) => setAttemptHeaders(res, { requestId: 'r', deployment: 'west', attempts: 3 }));
  assert.equal(served.headers['x-gateway-deployment'], 'west');
  assert.equal(served.headers['x-gateway-attempts'], '3');
  const none = await headOf((res) => setAttemptHeaders(res, { requestId: 'r', deployment: undefined, attempts: 0 }));
  assert.equal(none.headers['x-gateway-deployment'], undefined);
  assert.equal(none.headers['x-gateway-attempts'], '0');
});

test("setQuotaHeaders writes the client's remaining figures in Azure's names, 0 included", async () => {
  const both = await headOf((res) => setQuotaHeaders(res, { tokens: 0, requests: 7 }));
  assert.equal(both.headers['x-ratelimit-remaining-tokens'], '0', 'nothing left is a figure too');
  assert.equal(both.headers['x-ratelimit-remaining-requests'], '7');
  const tokensOnly = await headOf((res) => setQuotaHeaders(res, { tokens: 120 }));
  assert.equal(tokensOnly.headers['x-ratelimit-remaining-tokens'], '120');
  assert.equal(tokensOnly.headers['x-ratelimit-remaining-requests'], undefined, 'an unlimited budget has no header');
  const neither = await headOf((res) => setQuotaHeaders(res, {}));
  assert.equal(neither.headers['x-ratelimit-remaining-tokens'], undefined);
  assert.equal(neither.headers['x-ratelimit-remaining-requests'], undefined);
});

test('header takes the first of repeated values; numberHeader reads numbers and percentages, nothing else', () => {
  const headers = {
    single: 'one',
    repeated: ['first', 'second'],
    tokens: ' 700 ',
    utilization: '87.5%',
    repeatedNumber: ['5', '9'],
    blank: '',
    spaces: '   ',
    words: 'soon',
  } satisfies IncomingHttpHeaders;
  assert.equal(header(headers, 'single'), 'one');
  assert.equal(header(headers, 'repeated'), 'first');
  assert.equal(header(headers, 'missing'), undefined);
  assert.equal(numberHeader(headers, 'tokens'), 700);
  assert.equal(numberHeader(headers, 'utilization'), 87.5);
  assert.equal(numberHeader(headers, 'repeatedNumber'), 5);
  assert.equal(numberHeader(headers, 'missing'), undefined);
  assert.equal(numberHeader(headers, 'blank'), undefined, 'a blank is not 0');
  assert.equal(numberHeader(headers, 'spaces'), undefined, 'nor are spaces');
  assert.equal(numberHeader(headers, 'words'), undefined);
});

// '%' alone once read as 0 (the % stripped, Number('') is 0): a utilization header would have
// passed for an idle PTU deployment.
test('numberHeader: a lone % is not a number', () => {
  assert.equal(numberHeader({ utilization: '%' }, 'utilization'), undefined);
});

test('only a deployment that sends its utilization is provisioned', () => {
  assert.equal(isProvisioned({ [UTILIZATION_HEADER]: '12.5%' }), true);
  assert.equal(isProvisioned({ 'x-ratelimit-remaining-tokens': '900' }), false);
  assert.equal(isProvisioned({}), false);
});

test("an attempt carries the deployment's key and the request id; its body its exact length and no compression", () => {
  assert.deepEqual(attemptHeaders('deployment-key', 'req-9'), { 'api-key': 'deployment-key', 'x-request-id': 'req-9' });
  const given = { 'api-key': 'k' };
  const body = Buffer.from('{"content":"héllo 世界"}');
  assert.deepEqual(bodyHeaders(given, body), {
    'api-key': 'k',
    'content-length': String(body.length),
    'accept-encoding': 'identity',
  });
  assert.notEqual(String(body.length), String(body.toString().length), 'bytes, not characters, were counted');
  assert.deepEqual(given, { 'api-key': 'k' }, 'the attempt headers are not changed');
  assert.equal(bodyHeaders({}, Buffer.alloc(0))['content-length'], '0');
});
