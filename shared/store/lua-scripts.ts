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

function readLua(relativePath: string): string {
  return readFileSync(new URL(`./lua/${relativePath}`, import.meta.url), 'utf8');
}

/** Inlines includes one level deep (includes do not include each other), each at most once. */
function expandIncludes(source: string): string {
  const included = new Set<string>();
  return source.replace(INCLUDE_LINE, (_line, path: string) => {
    if (included.has(path)) return '';
    included.add(path);
    return readLua(path).trimEnd();
  });
}

let cache: Readonly<Record<ScriptName, string>> | undefined;

/** Every script's full source, read from disk once per process. */
export function luaScripts(): Readonly<Record<ScriptName, string>> {
  cache ??= Object.fromEntries(SCRIPT_NAMES.map((name) => [name, expandIncludes(readLua(`${name}.lua`))])) as Record<ScriptName, string>;
  return cache;
}
