/** Field checks worded as OpenAI words its 400s ("Invalid type for 'x': expected an integer, ..."). */
import { invalidRequest, type ErrorReply } from './errors.ts';

/** An optional integer field within [min, max]: the value, undefined when absent, or the 400 reply. */
export function optionalInteger(body: Record<string, unknown>, field: string, min: number, max: number): number | undefined | ErrorReply {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    return invalidRequest(`Invalid type for '${field}': expected an integer, but got ${typeName(value)} instead.`, field, 'invalid_type');
  }
  if (value < min) {
    return invalidRequest(
      `Invalid '${field}': integer below minimum value. Expected a value >= ${min}, but got ${value} instead.`,
      field,
      'integer_below_min_value',
    );
  }
  if (value > max) {
    return invalidRequest(
      `Invalid '${field}': integer above maximum value. Expected a value <= ${max}, but got ${value} instead.`,
      field,
      'integer_above_max_value',
    );
  }
  return value;
}

export function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'an integer' : 'a decimal';
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value}`;
}
