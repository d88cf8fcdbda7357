import assert from 'node:assert/strict';
import { createServer, request, type OutgoingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { assignRequestId } from '../../../gateway/http/request-id.ts';
import { sharedByTheFile } from '../../helpers/file-hooks.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let server: Server;
let port: number;
sharedByTheFile(
  async () => {
    // Answers the id it assigned in the body, so the test sees both the header and the returned value.
    server = createServer((req, res) => res.end(assignRequestId(req, res)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  },
  () => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())),
);

/** The x-request-id header and the body of a GET with these headers (node:http, so a header can be sent twice). */
function idFor(headers: OutgoingHttpHeaders): Promise<{ header: string | undefined; returned: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', headers, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ header: res.headers['x-request-id'] as string | undefined, returned: body }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer in 5 s')));
    req.on('error', reject);
    req.end();
  });
}

test('a sane client id is echoed', async () => {
  for (const id of ['abc-123', 'trace.id_42:span-7', 'x'.repeat(128), 'A']) {
    const { header, returned } = await idFor({ 'x-request-id': id });
    assert.equal(header, id);
    assert.equal(returned, id);
  }
});

test('a missing or bad id is replaced with a new UUID', async () => {
  const bad: OutgoingHttpHeaders[] = [
    {},
    { 'x-request-id': '' },
    { 'x-request-id': 'x'.repeat(129) },
    { 'x-request-id': 'has space' },
    { 'x-request-id': '<script>' },
    { 'x-request-id': 'a/b' },
    { 'x-request-id': 'a,b' },
    // Sent twice, Node joins them as "one, two": not one token.
    { 'x-request-id': ['one', 'two'] },
  ];
  const seen = new Set<string>();
  for (const headers of bad) {
    const { header, returned } = await idFor(headers);
    assert.match(header ?? '', UUID, JSON.stringify(headers));
    assert.equal(returned, header);
    seen.add(returned);
  }
  assert.equal(seen.size, bad.length, 'a new id each time');
});
