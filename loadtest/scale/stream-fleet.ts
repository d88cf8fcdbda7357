/**
 * The scale bench's side of its stream workers: several processes (one can hold only so many
 * sockets under the open-file limit) that share every load evenly, and answer as one.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { ProcessSet } from '../../shared/processes/process-set.ts';
import { REPO_ROOT } from '../lib/stack.ts';
import type { Counts, ErrorCounts, FromWorker, OpenResult, OpenSpec, StreamTarget, ToWorker } from './stream-protocol.ts';

/** A worker that does not answer a control message in this long is stuck (opens have their own bound). */
const CONTROL_TIMEOUT_MS = 10_000;

export interface StreamFleet {
  pids: number[];
  /** Opens `spec.count` streams at `spec.perSecond` in all, split over the workers. */
  open(spec: OpenSpec): Promise<OpenResult>;
  /** One probe stream from the first worker: ttft in ms, or null with the cause. */
  probe(target: StreamTarget, timeoutMs: number): Promise<{ ttftMs: number | null; error?: string }>;
  counts(): Promise<Counts>;
  /** Closes every stream of every worker; the number closed. */
  close(): Promise<number>;
}

export function mergeCounts(into: ErrorCounts, from: ErrorCounts): ErrorCounts {
  for (const [cause, count] of Object.entries(from)) into[cause] = (into[cause] ?? 0) + count;
  return into;
}

interface Worker {
  child: ChildProcess;
  call<T extends FromWorker['type']>(message: ToWorker, answer: T, timeoutMs: number): Promise<Extract<FromWorker, { type: T }>>;
}

async function startWorker(processes: ProcessSet, index: number): Promise<Worker> {
  const child = fork(join(REPO_ROOT, 'loadtest', 'scale', 'stream-worker.ts'), [], {
    cwd: REPO_ROOT,
    execPath: process.execPath,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  processes.adopt(`stream-worker-${index}`, child);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('stream worker did not start in 10 s')), 10_000);
    child.once('message', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`stream worker exited with ${code}`));
    });
  });
  return {
    child,
    call(message, answer, timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          done();
          reject(new Error(`stream worker ${index}: no '${answer}' in ${timeoutMs} ms`));
        }, timeoutMs);
        const onMessage = (reply: FromWorker) => {
          if (reply.type !== answer || !('id' in reply) || reply.id !== message.id) return;
          done();
          resolve(reply as Extract<FromWorker, { type: typeof answer }>);
        };
        const onExit = (code: number | null) => {
          done();
          reject(new Error(`stream worker ${index} exited with ${code}`));
        };
        const done = () => {
          clearTimeout(timer);
          child.off('message', onMessage);
          child.off('exit', onExit);
        };
        child.on('message', onMessage);
        child.once('exit', onExit);
        child.send(message);
      });
    },
  };
}

/** Splits n into `parts` near-equal whole shares. */
function shares(n: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, i) => Math.floor(n / parts) + (i < n % parts ? 1 : 0));
}

export async function startStreamFleet(processes: ProcessSet, workers: number): Promise<StreamFleet> {
  const all = await Promise.all(Array.from({ length: workers }, (_, i) => startWorker(processes, i)));
  let nextId = 1;
  return {
    pids: all.map((w) => w.child.pid!),
    async open(spec) {
      const parts = shares(spec.count, all.length);
      // The open's own bound: every stream sent, then settleMs; a little more for the IPC.
      const timeoutMs = (spec.count / spec.perSecond) * 1000 + spec.settleMs + CONTROL_TIMEOUT_MS;
      const results = await Promise.all(
        all.map((worker, i) =>
          parts[i]
            ? worker.call(
                { type: 'open', id: nextId++, spec: { ...spec, count: parts[i], perSecond: spec.perSecond * (parts[i] / spec.count) } },
                'opened',
                timeoutMs,
              )
            : Promise.resolve(undefined),
        ),
      );
      const total: OpenResult = { open: 0, failed: {}, pending: 0 };
      for (const reply of results) {
        if (!reply) continue;
        total.open += reply.result.open;
        total.pending += reply.result.pending;
        mergeCounts(total.failed, reply.result.failed);
      }
      return total;
    },
    async probe(target, timeoutMs) {
      const reply = await all[0]!.call({ type: 'probe', id: nextId++, target, timeoutMs }, 'probed', timeoutMs + CONTROL_TIMEOUT_MS);
      return { ttftMs: reply.ttftMs, ...(reply.error ? { error: reply.error } : {}) };
    },
    async counts() {
      const replies = await Promise.all(all.map((w) => w.call({ type: 'counts', id: nextId++ }, 'counts', CONTROL_TIMEOUT_MS)));
      const total: Counts = { events: 0, open: 0, broken: {} };
      for (const { counts } of replies) {
        total.events += counts.events;
        total.open += counts.open;
        mergeCounts(total.broken, counts.broken);
      }
      return total;
    },
    async close() {
      const replies = await Promise.all(all.map((w) => w.call({ type: 'close', id: nextId++ }, 'closed', CONTROL_TIMEOUT_MS)));
      return replies.reduce((acc, r) => acc + r.closed, 0);
    },
  };
}
