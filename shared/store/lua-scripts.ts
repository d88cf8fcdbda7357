/**
 * Loads the Lua scripts beside this module (lua/*.lua; the build copies lua/ into dist/) and inlines
 * their `--- @include "includes/NAME.lua"` lines, BullMQ-style, so helpers live in one place while each
 * script stays a single self-contained EVAL body.
 */
import { readFileSync } from 'node:fs';

export const SCRIPT_NAMES = [
  'acquire',
  'release',
  'renew',
  'cooldown',
  'open-circuit',
  'close-circuit',
  'drain',
  'enable',
  'reset',
  'snapshot',
  'leave-queue',
  'acquire-quota',
  'release-quota',
] as const;
export type ScriptName = (typeof SCRIPT_NAMES)[number];

const INCLUDE_LINE = /^--- @include "([\w./-]+)"\s*$/gm;

/**
 * The named scripts of the directory `dir` (a URL ending in '/'), each with its includes inlined one
 * level deep (includes do not include each other), each include at most once per script. The Batch
 * API's scripts (gateway/background/lua/) are read the same way.
 */
export function readLuaScripts<Name extends string>(dir: URL, names: readonly Name[]): Readonly<Record<Name, string>> {
  const read = (relativePath: string) => readFileSync(new URL(relativePath, dir), 'utf8');
  const expandIncludes = (source: string) => {
    const included = new Set<string>();
    return source.replace(INCLUDE_LINE, (_line, path: string) => {
      if (included.has(path)) return '';
      included.add(path);
      return read(path).trimEnd();
    });
  };
  return Object.fromEntries(names.map((name) => [name, expandIncludes(read(`${name}.lua`))])) as Record<Name, string>;
}

let cache: Readonly<Record<ScriptName, string>> | undefined;

/** Every script's full source, read from disk once per process. */
export function luaScripts(): Readonly<Record<ScriptName, string>> {
  cache ??= readLuaScripts(new URL('./lua/', import.meta.url), SCRIPT_NAMES);
  return cache;
}
