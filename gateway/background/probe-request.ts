/**
 * One active probe: the cheapest request that says whether a deployment serves again, sent straight
 * to it (not through the gateway's routing, which keeps it out of rotation). The path, api-version
 * and credential are the ones an ordinary attempt would use (upstream/target.ts, headers.ts), so a
 * probe fails where a client's request would. `chat` asks for one completion token with
 * max_completion_tokens (reasoning models refuse max_tokens); `embeddings` embeds one word.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Deployment } from '../pools.ts';
import { attemptHeaders, bodyHeaders, type UpstreamAuth } from '../upstream/headers.ts';
import { retryAfterMs } from '../upstream/retry-after.ts';
import { targetOf } from '../upstream/target.ts';

export type ProbeKind = 'chat' | 'embeddings';

/** The prefix of every probe's x-request-id: probes are told apart upstream (and in the simulator's records). */
export const PROBE_REQUEST_ID_PREFIX = 'probe_';

const PROBES = {
  chat: {
    operation: 'chat/completions',
    body: Buffer.from(JSON.stringify({ messages: [{ role: 'user', content: 'ping' }], max_completion_tokens: 1 })),
  },
  embeddings: { operation: 'embeddings', body: Buffer.from(JSON.stringify({ input: 'ping' })) },
} as const;

/** An answer came back whole (its status, and the retry time a 429 named), or none did. */
export type ProbeAnswer = { kind: 'answer'; status: number; retryAfterMs: number | undefined } | { kind: 'error'; reason: string };

/**
 * Sends the probe and reads its answer to the end (a 200 whose body breaks off is no pass), all
 * within `timeoutMs`. Never rejects. One connection per probe (no keep-alive): probes are seconds
 * apart, and a pooled socket the deployment dropped meanwhile would fail a healthy probe.
 */
export function sendProbe(
  deployment: Deployment,
  kind: ProbeKind,
  auth: UpstreamAuth,
  requestId: string,
  timeoutMs: number,
): Promise<ProbeAnswer> {
  const probe = PROBES[kind];
  const target = targetOf(deployment, {
    operation: probe.operation,
    apiVersion: undefined,
    body: probe.body,
    bodyWithUsage: undefined,
    stateful: undefined,
  });
  const headers = { ...bodyHeaders(attemptHeaders(auth, requestId), target.body), 'content-type': 'application/json' };
  const send = deployment.origin.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<ProbeAnswer>((resolve) => {
    let settled = false;
    const settle = (answer: ProbeAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(answer);
    };
    const req = send(new URL(target.path, deployment.origin), { method: 'POST', headers, agent: false }, (res: IncomingMessage) => {
      const answer: ProbeAnswer = { kind: 'answer', status: res.statusCode ?? 0, retryAfterMs: retryAfterMs(res.headers) };
      res.on('end', () => settle(answer));
      res.on('close', () => {
        if (!res.complete) settle({ kind: 'error', reason: 'the answer broke off' });
      });
      res.resume();
    });
    const timer = setTimeout(() => {
      settle({ kind: 'error', reason: `no answer within ${timeoutMs} ms` });
      req.destroy();
    }, timeoutMs);
    req.on('error', (error: NodeJS.ErrnoException) => settle({ kind: 'error', reason: error.code ?? error.message }));
    req.end(target.body);
  });
}
