/**
 * The control API, beside the Azure routes (under /_sim, never under /openai):
 *   POST /_sim/faults  {"deployment":"x","fault":{...}|null,"count"?:n}  install or clear a fault
 *   GET  /_sim/stats                                                     every deployment's counters
 *   GET  /_sim/stats?deployment=x                                        one deployment's counters
 *   POST /_sim/reset                                                     stats, windows, faults back to start
 * It needs no key: the simulator listens on loopback for tests and the load driver.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { faultSchema } from './faults.ts';
import { pathOf, queryParam, readBody, sendJson } from './http-utils.ts';
import type { Simulator } from './types.ts';

export const CONTROL_PREFIX = '/_sim/';

const setFaultBody = z.strictObject({
  deployment: z.string().min(1),
  fault: faultSchema.nullable(),
  count: z.number().int().min(1).optional(),
});

type Controls = Pick<Simulator, 'setFault' | 'stats' | 'allStats' | 'reset'> & { hasDeployment(name: string): boolean };

export async function handleControlRequest(controls: Controls, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = req.url ?? '/';
  const path = pathOf(url);
  const answer = (status: number, value: unknown): void => sendJson(res, status, [], JSON.stringify(value));

  if (path === '/_sim/stats' && req.method === 'GET') {
    const deployment = queryParam(url, 'deployment');
    if (deployment === null) return answer(200, controls.allStats());
    if (!controls.hasDeployment(deployment)) return answer(404, { error: `unknown deployment '${deployment}'` });
    return answer(200, controls.stats(deployment));
  }
  if (path === '/_sim/reset' && req.method === 'POST') {
    await readBody(req).catch(() => Buffer.alloc(0));
    controls.reset();
    return answer(200, { ok: true });
  }
  if (path === '/_sim/faults' && req.method === 'POST') {
    let input: unknown;
    try {
      input = JSON.parse((await readBody(req)).toString('utf8'));
    } catch {
      return answer(400, { error: 'the body is not JSON' });
    }
    const parsed = setFaultBody.safeParse(input);
    if (!parsed.success) return answer(400, { error: z.prettifyError(parsed.error) });
    const { deployment, fault, count } = parsed.data;
    if (!controls.hasDeployment(deployment)) return answer(404, { error: `unknown deployment '${deployment}'` });
    controls.setFault(deployment, fault === null ? null : count === undefined ? { fault } : { fault, count });
    return answer(200, { ok: true });
  }
  return answer(404, { error: `no control route ${req.method ?? ''} ${path}` });
}
