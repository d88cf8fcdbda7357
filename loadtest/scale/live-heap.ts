/**
 * A proxy's live heap: what is still reachable after a full garbage collection, read through the
 * inspector (the process runs with --inspect=127.0.0.1:0; its log names the address). The heap a
 * process reports unforced also holds garbage not yet collected, which varies with when the last
 * major GC ran; live memory per stream is the difference of two forced readings.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** Full collections before the reading: one can leave what a finalizer or a weak callback let go. */
const COLLECTIONS = 3;
const CALL_TIMEOUT_MS = 30_000;
const ADDRESS_WAIT_MS = 10_000;

export const INSPECT_ARGS = ['--inspect=127.0.0.1:0'];

export class LiveHeap {
  readonly #socket: WebSocket;
  readonly #pending = new Map<number, { resolve: (result: unknown) => void; reject: (error: Error) => void }>();
  #id = 0;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data)) as { id?: number; result?: unknown; error?: { message: string } };
      const waiter = message.id === undefined ? undefined : this.#pending.get(message.id);
      if (!waiter) return;
      this.#pending.delete(message.id!);
      if (message.error) waiter.reject(new Error(message.error.message));
      else waiter.resolve(message.result);
    });
    socket.addEventListener('close', () => {
      for (const waiter of this.#pending.values()) waiter.reject(new Error('the inspector connection closed'));
      this.#pending.clear();
    });
  }

  /** Connects to the inspector whose address the process wrote to `log`. */
  static async connect(log: string): Promise<LiveHeap> {
    const deadline = Date.now() + ADDRESS_WAIT_MS;
    let address: string | undefined;
    while (!address && Date.now() < deadline) {
      address = /ws:\/\/127\.0\.0\.1:\d+\/[\w-]+/.exec(readFileSync(log, 'utf8'))?.[0];
      if (!address) await sleep(100);
    }
    if (!address) throw new Error(`no inspector address in ${log}`);
    const socket = new WebSocket(address);
    await new Promise<void>((resolve, reject) => {
      socket.addEventListener('open', () => resolve(), { once: true });
      socket.addEventListener('error', () => reject(new Error(`could not reach the inspector at ${address}`)), { once: true });
    });
    return new LiveHeap(socket);
  }

  #call(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = ++this.#id;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${method}: no answer in ${CALL_TIMEOUT_MS} ms`));
      }, CALL_TIMEOUT_MS);
      this.#pending.set(id, {
        resolve: (result) => (clearTimeout(timer), resolve(result)),
        reject: (error) => (clearTimeout(timer), reject(error)),
      });
      this.#socket.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Heap in use after full collections, MB. */
  async usedMb(): Promise<number> {
    for (let i = 0; i < COLLECTIONS; i++) await this.#call('HeapProfiler.collectGarbage');
    const answer = (await this.#call('Runtime.evaluate', { expression: 'process.memoryUsage().heapUsed', returnByValue: true })) as {
      result: { value: number };
    };
    return answer.result.value / 2 ** 20;
  }

  close(): void {
    this.#socket.close();
  }
}
