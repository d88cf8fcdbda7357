/**
 * The Batch API's Lua scripts (../lua/*.lua; the build copies that directory into dist/), with their
 * `--- @include "includes/NAME.lua"` lines inlined (shared/store/lua-scripts.ts readLuaScripts), defined once
 * per client with defineCommand (EVALSHA, EVAL when the server does not know the script yet).
 */
import type { Cluster, Redis } from 'ioredis';
import { readLuaScripts } from '../../../shared/store/lua-scripts.ts';

export const BATCH_SCRIPTS = [
  'reserve-upload',
  'release-upload',
  'commit-upload',
  'delete-file',
  'create-batch',
  'transition',
  'settle',
] as const;
export type BatchScript = (typeof BATCH_SCRIPTS)[number];

let sources: Readonly<Record<BatchScript, string>> | undefined;

function scriptSources(): Readonly<Record<BatchScript, string>> {
  sources ??= readLuaScripts(new URL('../lua/', import.meta.url), BATCH_SCRIPTS);
  return sources;
}

type ScriptArg = string | number | Buffer;
type ScriptCommand = (numberOfKeys: number, ...keysThenArgs: ScriptArg[]) => Promise<unknown>;

/** Runs the scripts on one client; names are namespaced, since the client may define commands of its own. */
export class BatchScripts {
  readonly #redis: Redis | Cluster;

  constructor(redis: Redis | Cluster) {
    this.#redis = redis;
    const all = scriptSources();
    for (const name of BATCH_SCRIPTS) redis.defineCommand(commandName(name), { lua: all[name] });
  }

  run(name: BatchScript, keys: readonly string[], args: readonly ScriptArg[]): Promise<unknown> {
    const command = (this.#redis as unknown as Record<string, ScriptCommand>)[commandName(name)]!;
    return command.call(this.#redis, keys.length, ...keys, ...args);
  }
}

function commandName(script: BatchScript): string {
  return `spillway_batch_${script.replaceAll('-', '_')}`;
}

/** A script's array reply as numbers (the scripts answer { code, figure }). */
export function numbers(reply: unknown): number[] {
  if (!Array.isArray(reply)) throw new Error(`batch script returned ${typeof reply}, expected an array`);
  return reply.map(Number);
}
