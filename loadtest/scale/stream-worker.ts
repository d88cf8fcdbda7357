/**
 * A stream worker of the scale bench: a child process (forked with an IPC channel) that opens
 * long-lived SSE streams at a given rate, keeps them open, counts the events they receive, measures
 * the TTFT of probe streams, and closes them all on request. Several of them share a load: one
 * process can hold only so many sockets (the open-file limit), and its event loop stays out of the
 * figures of the proxy it loads.
 *
 * Every stream is its own connection (agent: false), as long streams from many clients are. It exits
 * when its parent disconnects.
 */
import type { IncomingMessage } from 'node:http';
import { loopbackUrl, sendOnce } from '../lib/http-client.ts';
import type { Counts, ErrorCounts, FromWorker, OpenResult, OpenSpec, StreamTarget, ToWorker } from './stream-protocol.ts';

if (!process.send) {
  console.error('stream-worker.ts is started by loadtest/scale-bench.ts (it needs an IPC channel)');
  process.exit(2);
}

const send = (message: FromWorker) => process.send?.(message);
const NEWLINE = 0x0a;
/** The first token's event: a delta whose content is not empty (the role chunk's is ""). */
const CONTENT = /"content":"[^"]/;

interface Stream {
  cut: () => void;
  opened: boolean;
}

const streams = new Set<Stream>();
let events = 0;
let broken: ErrorCounts = {};

const bump = (counts: ErrorCounts, cause: string) => (counts[cause] = (counts[cause] ?? 0) + 1);

function requestOptions(target: StreamTarget, timeoutHost: URL) {
  const body = Buffer.from(target.body);
  return {
    body,
    options: {
      host: timeoutHost.hostname,
      port: timeoutHost.port,
      method: 'POST',
      path: target.path,
      agent: false as const,
      headers: { 'content-type': 'application/json', 'content-length': String(body.length), 'api-key': target.apiKey },
    },
  };
}

/** Counts the blank lines that end SSE events, also when "\n\n" straddles two chunks. */
function eventCounter(): (chunk: Buffer) => number {
  let lastWasNewline = false;
  return (chunk) => {
    let found = 0;
    let from = 0;
    if (lastWasNewline && chunk[0] === NEWLINE) {
      found += 1;
      from = 1;
    }
    for (let at = chunk.indexOf('\n\n', from); at !== -1; at = chunk.indexOf('\n\n', at + 2)) found += 1;
    lastWasNewline = chunk[chunk.length - 1] === NEWLINE && !(chunk.length >= 2 && chunk[chunk.length - 2] === NEWLINE);
    return found;
  };
}

/**
 * One stream: `onFirst` when its first token arrives (ttft from the write), `onFail` when it ends in
 * any way before that; after it, an end (but for our own cut) counts in `broken`.
 */
function openStream(
  target: StreamTarget,
  idleTimeoutMs: number,
  onFirst: (ttftMs: number) => void,
  onFail: (cause: string) => void,
): Stream {
  const { body, options } = requestOptions(target, loopbackUrl(target.baseUrl));
  const stream: Stream = { cut: () => {}, opened: false };
  const sentAt = performance.now();
  const count = eventCounter();
  let closing = false;
  let refused = false;
  const onResponse = (response: IncomingMessage) => {
    if (response.statusCode !== 200) {
      // Its head says it all (an error body may be an upstream stream that goes on): failed now.
      refused = true;
      onFail(String(response.statusCode));
      response.destroy();
      return;
    }
    response.on('data', (chunk: Buffer) => {
      events += count(chunk);
      if (!stream.opened && CONTENT.test(chunk.toString('latin1'))) {
        stream.opened = true;
        onFirst(performance.now() - sentAt);
      }
    });
  };
  const cut = sendOnce(options, body, idleTimeoutMs, onResponse, (ending) => {
    streams.delete(stream);
    if (closing || refused) return;
    const cause = ending.error ?? (ending.status === 200 ? 'ended' : String(ending.status));
    if (stream.opened) bump(broken, cause);
    else onFail(cause);
  });
  stream.cut = () => {
    closing = true;
    cut();
  };
  streams.add(stream);
  return stream;
}

async function open(spec: OpenSpec): Promise<OpenResult> {
  broken = {};
  const failed: ErrorCounts = {};
  let opened = 0;
  let waiting = 0;
  const gapMs = 1000 / Math.max(1e-3, spec.perSecond);
  const start = performance.now();
  let sent = 0;
  let allSettled: () => void = () => {};
  const settled = new Promise<void>((resolve) => (allSettled = resolve));
  const check = () => {
    if (waiting === 0 && sent === spec.count) allSettled();
  };
  while (sent < spec.count) {
    // Evenly spaced sends, catching up after a late timer rather than drifting.
    const due = start + sent * gapMs;
    const now = performance.now();
    if (due > now) await new Promise((resolve) => setTimeout(resolve, due - now));
    waiting += 1;
    sent += 1;
    let settledOne = false;
    openStream(
      spec,
      spec.idleTimeoutMs,
      () => {
        if (settledOne) return;
        settledOne = true;
        opened += 1;
        waiting -= 1;
        check();
      },
      (cause) => {
        if (settledOne) return;
        settledOne = true;
        bump(failed, cause);
        waiting -= 1;
        check();
      },
    );
  }
  check();
  const timer = setTimeout(allSettled, spec.settleMs);
  await settled;
  clearTimeout(timer);
  return { open: opened, failed, pending: waiting };
}

function probe(target: StreamTarget, timeoutMs: number): Promise<{ ttftMs: number | null; error?: string }> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (result: { ttftMs: number | null; error?: string }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stream.cut();
      resolve(result);
    };
    const stream = openStream(
      target,
      timeoutMs,
      (ttftMs) => finish({ ttftMs }),
      (cause) => finish({ ttftMs: null, error: cause }),
    );
    const timer = setTimeout(() => finish({ ttftMs: null, error: 'timeout' }), timeoutMs);
  });
}

function counts(): Counts {
  return { events, open: [...streams].filter((s) => s.opened).length, broken };
}

function closeAll(): number {
  const all = [...streams];
  for (const stream of all) stream.cut();
  return all.length;
}

process.on('message', (message: ToWorker) => {
  const fail = (error: unknown) => {
    process.stderr.write(`stream worker: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  };
  switch (message.type) {
    case 'open':
      open(message.spec).then((result) => send({ type: 'opened', id: message.id, result }), fail);
      break;
    case 'probe':
      probe(message.target, message.timeoutMs).then((result) => send({ type: 'probed', id: message.id, ...result }), fail);
      break;
    case 'counts':
      send({ type: 'counts', id: message.id, counts: counts() });
      break;
    case 'close':
      send({ type: 'closed', id: message.id, closed: closeAll() });
      break;
  }
});
process.on('disconnect', () => process.exit(0));
send({ type: 'ready' });
