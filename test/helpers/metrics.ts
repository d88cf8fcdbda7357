/**
 * Reading a gateway's /metrics in tests: the Prometheus text exposition parsed into samples, and the
 * sum of the samples of a name whose labels include the ones asked for.
 */
import assert from 'node:assert/strict';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  samples: Sample[];
  /** Metric name → type, from the `# TYPE` lines (present before any sample is). */
  types: Map<string, string>;
}

export function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1]!, type[2]!);
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(match, `an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key!] = value!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return { samples, types };
}

export async function scrape(url: string): Promise<Exposition> {
  const response = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000) });
  assert.equal(response.status, 200);
  return parseExposition(await response.text());
}

/** The samples of `name` whose labels include `labels`. */
export function matching(metrics: Exposition, name: string, labels: Record<string, string> = {}): Sample[] {
  return metrics.samples.filter((s) => s.name === name && Object.entries(labels).every(([key, value]) => s.labels[key] === value));
}

/** Their sum (0 when there are none). */
export function value(metrics: Exposition, name: string, labels: Record<string, string> = {}): number {
  return matching(metrics, name, labels).reduce((sum, s) => sum + s.value, 0);
}

export async function metricValue(url: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  return value(await scrape(url), name, labels);
}
