/**
 * Reads the YAML config, replaces `${VAR}` from the environment and validates it. Every problem is
 * reported at once, one line each, naming the field path and the reason, so a bad deploy is fixed in
 * one round.
 */
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { configSchema, type GatewayConfig } from './schema.ts';

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(source: string, problems: string[]) {
    super(`invalid config ${source}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

type Path = (string | number)[];

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || '(root)';
}

const VARIABLE = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
const WHOLE_NUMBER = /^-?\d+(\.\d+)?$/;

/**
 * Replaces `${VAR}` in every string value. A value that is exactly one variable holding a number
 * becomes a number, so `tpm: ${EASTUS_TPM}` validates as a number.
 */
function substitute(value: unknown, env: NodeJS.ProcessEnv, path: Path, problems: string[]): unknown {
  if (typeof value === 'string') {
    const missing: string[] = [];
    const replaced = value.replace(VARIABLE, (_, name: string) => {
      const found = env[name];
      if (found === undefined) missing.push(name);
      return found ?? '';
    });
    for (const name of missing) problems.push(`${formatPath(path)}: environment variable ${name} is not set`);
    const whole = /^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/.test(value);
    return whole && WHOLE_NUMBER.test(replaced) ? Number(replaced) : replaced;
  }
  if (Array.isArray(value)) return value.map((item, index) => substitute(item, env, [...path, index], problems));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, substitute(item, env, [...path, key], problems)]));
  }
  return value;
}

export function parseConfig(text: string, env: NodeJS.ProcessEnv = process.env, source = '(inline)'): GatewayConfig {
  const document = parseDocument(text, { uniqueKeys: true });
  if (document.errors.length > 0) {
    throw new ConfigError(
      source,
      document.errors.map((e) => `YAML: ${e.message.split('\n')[0]}`),
    );
  }
  const problems: string[] = [];
  const raw = substitute(document.toJS() ?? {}, env, [], problems);
  // A missing variable already explains why its field is empty; don't report the field twice.
  const explained = new Set(problems.map((p) => p.slice(0, p.indexOf(': '))));
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const path = formatPath(issue.path);
      if (explained.has(path)) continue;
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) problems.push(`${path === '(root)' ? key : `${path}.${key}`}: unknown key`);
      } else {
        problems.push(`${path}: ${issue.message}`);
      }
    }
  }
  if (problems.length > 0) throw new ConfigError(source, problems);
  return result.data as GatewayConfig;
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(file, [`cannot read the file: ${(error as NodeJS.ErrnoException).code ?? String(error)}`]);
  }
  return parseConfig(text, env, file);
}
